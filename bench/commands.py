"""Whole commands as a user runs them, in fresh processes: wall clock including start-up.

`lookalike index` against the naive script on the same photos, the time to the first photo
embedded, the commands that do not embed, and the allocator's effect on system time.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The naive script, as a user would write it: full decode, torchvision transforms, fp32, one process.
NAIVE_SCRIPT = """
import sys
from pathlib import Path
from bench.indexing import naive_baseline
files = sorted(Path(sys.argv[1]).rglob("*.jpg"))
naive_baseline(files, "efficientnet_lite0", 32)
"""

# Model only with PyTorch, one thread, with or without the allocator setting: user and system time.
ALLOCATOR_PROBE = """
import resource, sys, time
import torch
from indexer.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
torch.set_num_threads(1)
from indexer.backbone import Backbone
from indexer.engines import TorchEngine
engine = TorchEngine(Backbone(device="cpu"))
x = torch.randint(0, 256, (32, 3, 224, 224), dtype=torch.uint8)
engine.embed_uint8(x)
r0 = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(3):
    engine.embed_uint8(x)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt, 96)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def wall(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def lookalike(*args: object) -> list[str]:
    return [sys.executable, "-m", "lookalike.cli", *map(str, args)]


def index_wall(photos: Path, engine: str = "auto") -> float:
    """`lookalike index PHOTOS` into a fresh library, wall clock including start-up."""
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        return wall(lookalike("index", photos, "--library", Path(tmp) / "lib", "--quiet", "--engine", engine))


def naive_wall(photos: Path) -> float:
    """The naive script on the same photos, wall clock including its own imports."""
    return wall([sys.executable, "-c", NAIVE_SCRIPT, str(photos)])


def first_photo_wall(photo: Path) -> float:
    """`lookalike index` of a folder holding one photo: start-up to the first photo embedded and
    stored (warm disk cache, converted model cached)."""
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp:
        folder = Path(tmp) / "one"
        folder.mkdir()
        shutil.copy(photo, folder / photo.name)
        return wall(lookalike("index", folder, "--library", Path(tmp) / "lib", "--quiet"))


def command_walls(library: Path, reps: int) -> dict[str, float]:
    """Median wall seconds of commands that do not embed, on an indexed library."""
    commands = {
        "status": ["status"],
        "labels counts": ["labels", "counts"],
        "search <id>": ["search", "1", "-k", "20"],
        "duplicates": ["duplicates"],
    }
    out = {
        name: statistics.median(wall(lookalike(*args, "--library", library)) for _ in range(reps))
        for name, args in commands.items()
    }
    # What the interpreter alone costs on this machine right now: the floor under every command.
    out["python -c pass"] = statistics.median(wall([sys.executable, "-c", "pass"]) for _ in range(reps))
    return out


def allocator_probe() -> dict[str, dict[str, float]]:
    """Model-only PyTorch (1 thread) with glibc's defaults and with freed memory kept."""
    out = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE, mode], check=True, cwd=REPO, env=_env(),
                              capture_output=True, text=True)
        user, system, faults, images = (float(v) for v in done.stdout.split())
        out[mode] = {"user": user, "system": system, "faults": faults, "images": images,
                     "cpu_rate": images / (user + system)}
    return out
