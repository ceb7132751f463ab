"""What the benchmarks ran on: CPU model, cores, memory, library versions, device."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> dict[str, str]:
    import faiss
    import PIL
    import torch

    from indexer.backbone import cpu_has_native_bf16, pick_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    device = pick_device("auto")
    if device.type == "cuda":
        device_text = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        device_text = device.type + (" (native bf16: avx512_bf16/amx)" if cpu_has_native_bf16() else "")
    try:
        load = "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        load = "?"
    return {
        "cpu": cpu,
        "cores": str(cores),
        "memory": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "pillow": PIL.__version__,
        "device": device_text,
        "os": f"{platform.system()} {platform.release()}",
        "load average at start": load,
    }
