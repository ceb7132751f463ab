"""Inference engines: the same backbone run by PyTorch or, on a CPU, by OpenVINO, chosen for the machine.

PyTorch is the reference and the GPU path. On a CPU, OpenVINO runs the very same network (converted
from the torch module with `openvino.convert_model`) 2 to 3x faster on AVX2 machines and uses
bf16/AMX where the CPU has it. The converted model is cached on disk, keyed by backbone, weights,
preprocessing, OpenVINO version and precision, so conversion (which needs torch) is paid once;
later runs read it without importing torch at all.

Every engine maps uint8 crops [B, 3, H, W] (`Preprocess.crop_uint8`) to unit float32 vectors [B, D].
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from indexer.torch_threads import TORCH_LOCK

if TYPE_CHECKING:  # torch is imported only by the code that runs it; NumPy by the code that embeds
    import numpy as np
    import numpy.typing as npt

    from indexer.backbone import Backbone

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "openvino")
CACHE_ENV = "LOOKALIKE_CACHE"  # where converted models live; default $XDG_CACHE_HOME/lookalike
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


class EngineError(Exception):
    """An engine cannot run as asked (unknown name, not installed, wrong device or precision)."""


class Engine(Protocol):
    name: str
    fallback_note: str  # why auto did not take OpenVINO; empty when it did or was not asked

    @property
    def precision(self) -> str: ...

    def prepare(self) -> None: ...

    def embed_uint8(self, batch: Any) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class EngineChoice:
    """Which engine runs, and why another was not taken (`note`, empty when none)."""

    name: str
    note: str = ""


def import_openvino() -> ModuleType:
    """`import openvino`, without its telemetry: the one way this project imports OpenVINO.

    Importing openvino sends a usage event (openvino/tools/ovc/__init__.py) through the
    openvino_telemetry package, whose GA4 backend posts it from a `multiprocessing.Process`: a fork.
    A fork while another thread is in an OpenBLAS matmul (the web's retraining) can deadlock the
    whole process: OpenBLAS's at-fork handler waits for its busy threads with the GIL held, and the
    thread that would free them waits for the GIL. openvino falls back to its own no-op stub when
    openvino_telemetry cannot be imported, and a None in sys.modules makes that import fail.
    Raises ImportError when OpenVINO is not installed.
    """
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: "cannot be imported"
    import openvino

    return openvino


def openvino_available() -> bool:
    try:
        import_openvino()
    except ImportError:
        return False
    return True


def choose_engine(requested: str, device_type: str, precision: str) -> EngineChoice:
    """auto: OpenVINO on a CPU when it is installed and the precision is one it runs, else PyTorch."""
    if requested not in ENGINES:
        raise EngineError(f"unknown engine {requested!r}: choose one of {', '.join(ENGINES)}")
    if requested == "torch":
        return EngineChoice("torch")
    if requested == "openvino":
        if device_type != "cpu":
            raise EngineError(f"the openvino engine runs on the CPU, not on {device_type}: pass --device cpu")
        if precision not in _OV_PRECISION:
            raise EngineError(f"the openvino engine runs fp32 or bf16, not {precision}")
        if not openvino_available():
            raise EngineError("the openvino engine is not installed: `pip install openvino`, or --engine torch")
        return EngineChoice("openvino")
    if device_type != "cpu":
        return EngineChoice("torch")  # a GPU: PyTorch is the GPU path
    if precision not in _OV_PRECISION:
        return EngineChoice("torch", f"openvino does not run {precision}")
    if not openvino_available():
        return EngineChoice("torch", "openvino not installed")
    return EngineChoice("openvino")


def make_engine(backbone: Backbone, requested: str = "auto", *, threads: int | None = None) -> Engine:
    """The engine for `backbone` on its device; `threads` caps OpenVINO's threads (None: all cores)."""
    choice = choose_engine(requested, backbone.device_type, backbone.precision)
    engine: Engine
    if choice.name == "openvino":
        engine = OpenVinoEngine(backbone, threads=threads)
    else:
        engine = TorchEngine(backbone)
    engine.fallback_note = choice.note
    return engine


def describe(engine: Engine) -> str:
    """'openvino fp32', or 'torch fp32 (openvino not installed)': what the summary line says."""
    note = engine.fallback_note
    return f"{engine.name} {engine.precision}" + (f" ({note})" if note else "")


# -- PyTorch: the reference ----------------------------------------------------------------------------


class TorchEngine:
    name = "torch"
    fallback_note = ""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone

    @property
    def precision(self) -> str:
        return self.backbone.precision

    def prepare(self) -> None:
        self.backbone.model  # noqa: B018 (load the weights once, before workers fork)

    def embed_uint8(self, batch: Any) -> npt.NDArray[np.float32]:
        import numpy as np
        import torch

        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        with TORCH_LOCK:  # never beside another thread's change of torch's thread count
            return self.backbone.embed_uint8(batch)


# -- OpenVINO: the CPU path ------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$LOOKALIKE_CACHE, else $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike: shared by libraries."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lookalike"


def _make_module(backbone: Backbone):
    """The backbone as one torch module: uint8 crops in, unit vectors out (what OpenVINO converts)."""
    import torch

    class Embedder(torch.nn.Module):
        mean: torch.Tensor
        std: torch.Tensor
        model: Any

        def __init__(self) -> None:
            super().__init__()
            self.model = backbone.model
            pp = backbone.preprocess
            self.register_buffer("mean", torch.tensor(pp.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(pp.std).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x.float() / 255.0 - self.mean) / self.std
            if hasattr(self.model, "forward_head"):  # timm
                x = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            else:
                x = self.model(x)
            return torch.nn.functional.normalize(x, dim=1)

    return Embedder().eval()


class OpenVinoEngine:
    """The backbone compiled by OpenVINO for this CPU.

    With more than one thread it runs as many single-thread streams as threads, each on a slice of
    the batch: no thread waits at a per-layer barrier for another that a decoder (or any other job)
    has pre-empted, which is what makes a multi-threaded model slow on a busy 2-core machine.
    """

    name = "openvino"
    fallback_note = ""

    def __init__(self, backbone: Backbone, *, threads: int | None = None) -> None:
        openvino = import_openvino()
        self.backbone = backbone
        self.version = openvino.__version__.split("-")[0]
        self._precision = backbone.precision
        if self._precision not in _OV_PRECISION:
            raise EngineError(f"the openvino engine runs fp32 or bf16, not {self._precision}")
        self.threads = threads
        self._compiled: Any = None
        self._lock = threading.Lock()
        # An infer request runs one inference at a time: the web's threads (a request, the warm-up)
        # take turns on this engine's requests; one call still spreads its batch over every stream.
        self._infer_lock = threading.Lock()

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def model_path(self) -> Path:
        """<cache>/openvino/<backbone>-<key>.xml, the key hashing everything the graph depends on."""
        b = self.backbone
        key = "|".join([b.name, b.weights_identity, b.preprocess.describe(), self.version, self._precision])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache_dir() / "openvino" / f"{b.name}-{self._precision}-ov{self.version}-{digest}.xml"

    def prepare(self) -> None:
        """Convert and cache the model if it is not cached yet (needs torch; paid once per key)."""
        path = self.model_path
        if path.exists() and path.with_suffix(".bin").exists():
            return
        import torch

        openvino = import_openvino()

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written beside its final place and renamed: a concurrent or killed run never reads half a file.
            tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=path.parent))
        except OSError as e:  # $LOOKALIKE_CACHE a file, or a folder this user cannot write
            raise EngineError(f"cannot write converted models into {path.parent}: {e.strerror} "
                              f"({CACHE_ENV} names their folder)") from None
        try:
            log.info("converting %s for OpenVINO into %s (once)", self.backbone.name, path)
            crop = self.backbone.preprocess.crop
            example = torch.zeros((1, 3, crop, crop), dtype=torch.uint8)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer chatter: not the user's
                model = openvino.convert_model(_make_module(self.backbone), example_input=example,
                                               input=[(-1, 3, crop, crop)])
            # compress_to_fp16=False: the weights stay fp32; the precision is chosen at compile time.
            openvino.save_model(model, tmp / path.name, compress_to_fp16=False)
            os.replace(tmp / path.with_suffix(".bin").name, path.with_suffix(".bin"))
            os.replace(tmp / path.name, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @property
    def compiled(self) -> Any:
        """The compiled model, built on first use in the process that runs it (forked workers
        compile their own: OpenVINO's thread pool does not survive a fork)."""
        if self._compiled is None:
            with self._lock:
                if self._compiled is None:
                    self._compiled = self._compile()
        return self._compiled

    @property
    def streams(self) -> int:
        """How many batches this engine runs at once (one per stream): a caller that hands it that
        many batches in one call keeps every stream on a whole batch (indexer/runners/threads.py)."""
        self.compiled  # noqa: B018
        return self._streams

    @property
    def compiled_cache(self) -> Path:
        """OpenVINO's CACHE_DIR for this model: <cache>/openvino/compiled/<model file's stem>.

        One folder per converted model, whose name already hashes the backbone, the weights (a
        tuned representation's own), the preprocessing, OpenVINO's version and the precision: a
        compiled blob is never looked up under another model's key, whatever OpenVINO hashes.
        A later run imports the compiled graph instead of compiling it (about 1 s of Lite0's
        start-up on a 2-core Xeon).
        """
        return cache_dir() / "openvino" / "compiled" / self.model_path.stem

    def _compile(self) -> Any:
        openvino = import_openvino()
        self.prepare()
        core = openvino.Core()
        try:
            self.compiled_cache.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(self.compiled_cache)})
        except OSError as e:  # a read-only cache: compile every time, as before
            log.info("no compiled-model cache in %s: %s", self.compiled_cache, e)
        threads = self.threads or cores()
        config = {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[self._precision],
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": threads,  # one single-thread stream per thread
            "PERFORMANCE_HINT": "THROUGHPUT",
            "ENABLE_CPU_PINNING": False,  # a shared machine: let the OS move threads
        }
        try:
            model = core.read_model(self.model_path)
        except RuntimeError as e:  # a cached file cut short or overwritten (a full disk, a copy): convert again
            log.warning("%s is damaged (%s): converting it again", self.model_path, str(e).strip().splitlines()[-1])
            self.model_path.unlink(missing_ok=True)
            self.prepare()
            model = core.read_model(self.model_path)
        compiled = core.compile_model(model, "CPU", config)
        got = compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != {"fp32": openvino.Type.f32, "bf16": openvino.Type.bf16}[self._precision]:
            raise EngineError(f"OpenVINO compiled {self.backbone.name} in {got}, not {self._precision}")
        self._streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._requests = [compiled.create_infer_request() for _ in range(self._streams)]
        return compiled

    def embed_uint8(self, batch: Any) -> npt.NDArray[np.float32]:
        """Unit vectors [B, D] for uint8 crops [B, 3, H, W] (a numpy array or a torch tensor)."""
        import numpy as np

        x = np.ascontiguousarray(batch.numpy() if hasattr(batch, "numpy") else batch, dtype=np.uint8)
        self.compiled  # noqa: B018
        if len(x) == 0:
            return np.zeros((0, self.backbone.dim), np.float32)
        with self._infer_lock:
            return infer_split(self._requests, x)


def infer_split(requests: list, x: npt.NDArray) -> npt.NDArray[np.float32]:
    """One batch through OpenVINO infer requests of one compiled model, a slice per request (stream),
    all at once; the output [B, ...] in the batch's order. The caller holds the requests' lock."""
    import numpy as np

    parts = [p for p in np.array_split(x, min(len(requests), len(x))) if len(p)]
    requests = requests[: len(parts)]
    for request, part in zip(requests, parts, strict=True):
        request.start_async([part])
    out = []
    for request in requests:
        request.wait()
        out.append(np.array(request.get_output_tensor(0).data, dtype=np.float32))
    return np.concatenate(out)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 2
