"""The frozen stages on OpenVINO while fine-tuning on a CPU without native bf16.

Fine-tuning runs the backbone's early stages without autograd on every augmented view of every
labelled photo, for every candidate and every epoch: they are pure inference, and on a CPU without
native bf16 torch runs them in fp32 far slower than OpenVINO does. Lite0 up to its last 2 stages, a
batch of 32 on a 2-core AMD EPYC (avx2, no AVX-512): torch 34 ms a photo, OpenVINO 5.9 ms, the same
numbers to 6e-5 (on values up to 26); the tail's forward and backward pass is 13 ms. So where
training would run fp32 on the CPU, the frozen stages are converted once per process (2.5 s) and run
by OpenVINO; the tail and the head still train in torch. On CUDA, and on CPUs with native bf16 (where
training runs bf16 autocast), torch runs them as before.

torch and OpenVINO are imported inside the functions that run them.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.engines import cores, import_openvino, infer_split, openvino_available

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Trunk = Callable[["torch.Tensor"], "torch.Tensor"]

# (weights, cut, crop) -> (compiled model, its infer requests, the lock a batch holds them with)
_compiled: dict[tuple, tuple[Any, list, threading.Lock]] = {}
_lock = threading.Lock()


def openvino_trunk(frozen: Sequence[Any], key: tuple, crop: int) -> Trunk | None:
    """A function running the `frozen` torch modules (in order, on normalised crops [B, 3, crop, crop])
    on OpenVINO in fp32, returning what they would; None when OpenVINO is not installed. `key` is
    (the modules' weights, where they were cut): one conversion per key and process, and only the
    latest weights' kept."""
    if not openvino_available():
        return None
    with _lock:
        if (*key, crop) not in _compiled:
            for stale in [k for k in _compiled if k[0] != key[0]]:  # another backbone's: a server keeps one set
                del _compiled[stale]
            _compiled[(*key, crop)] = _compile(frozen, crop)
        _, requests, lock = _compiled[(*key, crop)]

    def run(x: torch.Tensor) -> torch.Tensor:
        import torch

        with lock:
            out = infer_split(requests, np.ascontiguousarray(x.detach().float().cpu().numpy()))
        return torch.from_numpy(out).contiguous(memory_format=torch.channels_last)

    return run


def _compile(frozen: Sequence[Any], crop: int) -> tuple[Any, list, threading.Lock]:
    import torch

    openvino = import_openvino()
    module = copy.deepcopy(torch.nn.Sequential(*frozen)).eval()  # batch norms on running statistics, as trained
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's chatter
        model = openvino.convert_model(module, example_input=torch.zeros(1, 3, crop, crop),
                                       input=[(-1, 3, crop, crop)])
    threads = cores()
    compiled = openvino.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": openvino.Type.f32,
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": threads,  # one single-thread stream per thread, as the engine's
        "PERFORMANCE_HINT": "THROUGHPUT",
        "ENABLE_CPU_PINNING": False,
    })
    streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    log.info("the frozen stages run on OpenVINO (fp32, %d streams)", streams)
    return compiled, [compiled.create_infer_request() for _ in range(streams)], threading.Lock()
