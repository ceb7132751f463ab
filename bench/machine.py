"""What the benchmarks ran on: CPU model, cores, memory, library versions, device."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def kind() -> str:
    """The machine kind a BENCHMARKS.md section belongs to: cuda, amx, avx512_bf16, avx512 or avx2."""
    try:
        flags = set(" ".join(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                             if line.startswith("flags")).split())
    except OSError:
        flags = set()
    if os.environ.get("CUDA_VISIBLE_DEVICES", "") != "-1" and Path("/dev/nvidia0").exists():
        return "cuda"
    for flag in ("amx_bf16", "avx512_bf16", "avx512f", "avx2"):
        if flag in flags:
            return {"amx_bf16": "amx", "avx512f": "avx512"}.get(flag, flag)
    return platform.machine()


def describe() -> dict[str, str]:
    import faiss
    import PIL
    import torch

    from indexer.backbone import cpu_has_native_bf16, pick_device
    from indexer.engines import import_openvino

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
        openvino_version = import_openvino().__version__
    except ImportError:
        openvino_version = "not installed"
    try:
        load = "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        load = "?"
    return {
        "cpu": cpu,
        "cores": str(cores),
        "cpu flags": cpu_flags(),
        "memory": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "openvino": openvino_version,
        "pillow": PIL.__version__,
        "device": device_text,
        "os": f"{platform.system()} {platform.release()}",
        "load average at start": load,
    }


# The instruction sets that decide which engine and precision are fastest.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> str:
    """'avx2 yes, avx512f no, ...' from /proc/cpuinfo ('?' where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    have = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            break
    return ", ".join(f"{f} {'yes' if f in have else 'no'}" for f in FLAGS)
