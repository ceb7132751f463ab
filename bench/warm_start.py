"""Warm start: `lookalike index` as it is run most often, on a library that is already there.

A copy of the whole corpus (3,781 clothing photos) is indexed once by `lookalike index`; then, each
in a fresh process as a user runs it (wall clock with the interpreter's start-up):

    unchanged   the same folder again: scan, compare, nothing to embed (no model is loaded)
    5 new       five new photos added to it (real photos re-encoded, so their bytes are new)

For each run the time to the first photo written (its batch committed to SQLite) is read from the
run's own report, counted from the process's start.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from bench import commands
from bench.indexing import copy_tree, photo_files

NEW_PHOTOS = 5

# `lookalike index` in a fresh interpreter, reporting when the first photo was written and whether
# torch or openvino were imported. The command itself is the CLI's: only index_and_refresh is watched.
TIMED_INDEX = """
import sys, time
t0 = time.perf_counter()
import search.refresh as refresh  # light: the heavy modules load inside, as the command's own run needs them
real, seen = refresh.index_and_refresh, {}
def watched(*args, **kwargs):
    seen["run"] = run = real(*args, **kwargs)
    return run
refresh.index_and_refresh = watched
from lookalike.cli import main
main(sys.argv[1:], standalone_mode=False)
report = seen["run"].report
first = report.started - t0 + report.first_written_seconds if report.first_written_seconds is not None else -1
print(report.indexed, report.unchanged, first, time.perf_counter() - t0, "torch" in sys.modules,
      "openvino" in sys.modules)
"""


def _env(workdir: Path) -> dict[str, str]:
    """The bench's environment, with bytecode cached under `workdir` as an installed package has it:
    a development shell's PYTHONDONTWRITEBYTECODE would compile every module of ours on each run."""
    env = commands._env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def timed_index(photos: Path, library: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TIMED_INDEX, "index", str(photos), "--library", str(library),
                           "--quiet"], cwd=commands.REPO, env=_env(library.parent), capture_output=True,
                          text=True, check=True)
    wall = time.perf_counter() - started
    indexed, unchanged, first, inside, torch, openvino = done.stdout.split()[-6:]
    return {"wall": wall, "indexed": int(indexed), "unchanged": int(unchanged),
            "first_written": float(first) if float(first) >= 0 else None, "inside": float(inside),
            "torch": torch == "True", "openvino": openvino == "True"}


def new_photos(files: list[Path], folder: Path, rep: int) -> None:
    """NEW_PHOTOS real photos re-encoded (quality 90 - rep): new bytes, so new photos to the plan."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files[rep * NEW_PHOTOS : (rep + 1) * NEW_PHOTOS]):
        Image.open(f).convert("RGB").save(folder / f"new-{rep}-{i}.jpg", "JPEG", quality=90 - rep)


def run(corpus: Path, workdir: Path, reps: int, say=print) -> dict:
    files = photo_files(corpus, None)
    photos = copy_tree(files, corpus, workdir / "warm-photos")
    library = workdir / "warm-library"
    say(f"  indexing {len(files)} photos once with `lookalike index` ...")
    full = timed_index(photos, library)
    say(f"    {full['indexed']} photos in {full['wall']:.1f}s")
    timed_index(photos, library)  # warm-up: the disk cache, the interpreter's own files
    unchanged, added = [], []
    for rep in range(reps):
        unchanged.append(timed_index(photos, library))
        new_photos(files, photos / "new", rep)
        added.append(timed_index(photos, library))
        say(f"    rep {rep + 1}/{reps}: unchanged {unchanged[-1]['wall']:.2f}s (torch {unchanged[-1]['torch']}, "
            f"openvino {unchanged[-1]['openvino']}); {NEW_PHOTOS} new {added[-1]['wall']:.2f}s, first written at "
            f"{added[-1]['first_written'] or float('nan'):.2f}s (torch {added[-1]['torch']})")
    return {
        "photos": full["indexed"],
        "full_wall": full["wall"],
        "unchanged_wall": [r["wall"] for r in unchanged],
        "unchanged_loaded": {"torch": any(r["torch"] for r in unchanged),
                             "openvino": any(r["openvino"] for r in unchanged)},
        "new_wall": [r["wall"] for r in added],
        "new_first_written": [r["first_written"] for r in added if r["first_written"] is not None],
        "new_loaded": {"torch": any(r["torch"] for r in added), "openvino": any(r["openvino"] for r in added)},
        "new_indexed": [r["indexed"] for r in added],
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
