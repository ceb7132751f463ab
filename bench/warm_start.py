"""Warm start: `lookalike index` as it is run most often, on a library that is already there.

A copy of the whole corpus (3,781 clothing photos) is indexed once by `lookalike index`; then, each
in a fresh process as a user runs it (wall clock with the interpreter's start-up):

    unchanged   the same folder again: scan, compare, nothing to embed (no model is loaded)
    5 new       five new photos added to it (real photos re-encoded, so their bytes are new)

For each run the time to the first photo written (its batch committed to SQLite) is read from the
run's own report, counted from the process's start.

`python -m bench.warm_start --baseline DIR` runs the same, interleaved, with another checkout (e.g.
`git worktree add /tmp/base <commit>`) on a copy of the same library, and prints the ratios.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def timed_index(photos: Path, library: Path, tree: Path | None = None) -> dict:
    """One fresh `lookalike index` of this checkout (or of `tree`, with that checkout's own probe)."""
    probe, env = TIMED_INDEX, _env(library.parent)
    if tree is not None:
        probe = _probe_of(tree)
        env["PYTHONPATH"] = str(tree)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, "index", str(photos), "--library", str(library),
                           "--quiet"], cwd=tree or commands.REPO, env=env, capture_output=True, text=True, check=True)
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


def _probe_of(tree: Path) -> str:
    """TIMED_INDEX as another checkout's bench/warm_start.py has it (it watches what that code runs)."""
    for node in ast.parse((tree / "bench" / "warm_start.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TIMED_INDEX":
            return ast.literal_eval(node.value)
    raise SystemExit(f"{tree}/bench/warm_start.py has no TIMED_INDEX")


def compare(corpus: Path, workdir: Path, baseline: Path, reps: int, say=print) -> dict:
    """This checkout and `baseline` side by side: the same folder, copies of one library (built by
    this checkout), each repetition's runs in alternating order."""
    files = photo_files(corpus, None)
    photos = copy_tree(files, corpus, workdir / "warm-photos")
    trees: dict[str, Path | None] = {"this": None, "baseline": baseline}
    libraries = {name: workdir / name / "library" for name in trees}
    say(f"  indexing {len(files)} photos once with `lookalike index` ...")
    timed_index(photos, libraries["this"])
    shutil.copytree(libraries["this"], libraries["baseline"])
    for name, tree in trees.items():
        for _ in range(2):  # warm-up: bytecode, the disk cache, a first complete run
            timed_index(photos, libraries[name], tree)
    runs: dict[str, dict[str, list[dict]]] = {name: {"unchanged": [], "new": []} for name in trees}
    loads = [os.getloadavg()[0]]
    for rep in range(reps):
        order = list(trees) if rep % 2 == 0 else list(trees)[::-1]
        for name in order:
            runs[name]["unchanged"].append(timed_index(photos, libraries[name], trees[name]))
        new_photos(files, photos / "new", rep)
        for name in order:
            runs[name]["new"].append(timed_index(photos, libraries[name], trees[name]))
        loads.append(os.getloadavg()[0])
        say(f"    rep {rep + 1}/{reps}: " + "; ".join(
            f"{name} unchanged {r['unchanged'][-1]['wall']:.2f}s, {NEW_PHOTOS} new {r['new'][-1]['wall']:.2f}s"
            for name, r in runs.items()) + f" (load {loads[-1]:.1f})")
    out: dict = {"photos": len(files), "load": (min(loads), max(loads))}
    for case in ("unchanged", "new"):
        for name in trees:
            out[f"{name} {case}"] = [r["wall"] for r in runs[name][case]]
        out[f"{case} ratio"] = median(out[f"this {case}"]) / median(out[f"baseline {case}"])
    for name in trees:
        out[f"{name} first written"] = [r["first_written"] for r in runs[name]["new"] if r["first_written"]]
        unchanged = runs[name]["unchanged"]
        out[f"{name} unchanged imports"] = {m: any(r[m] for r in unchanged) for m in ("torch", "openvino")}
    return out


def main(argv: list[str] | None = None) -> None:
    from bench.__main__ import CORPUS
    from bench.machine import cpu_flags

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, measured beside this one")
    args = parser.parse_args(argv)
    print(f"cpu flags: {cpu_flags()}; load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="warm-start-") as work:
        if args.baseline is None:
            r = run(args.corpus, Path(work), args.reps)
            print(f"unchanged {median(r['unchanged_wall']):.2f} s, {NEW_PHOTOS} new {median(r['new_wall']):.2f} s "
                  f"(first written {median(r['new_first_written']):.2f} s); load {os.getloadavg()[0]:.1f}")
            return
        r = compare(args.corpus, Path(work), args.baseline.resolve(), args.reps)
    print(f"medians of {args.reps}, load average {r['load'][0]:.1f}-{r['load'][1]:.1f}:")
    for case, label in (("unchanged", "unchanged folder"), ("new", f"{NEW_PHOTOS} new photos")):
        this, base = r[f"this {case}"], r[f"baseline {case}"]
        print(f"  {label}: this {median(this):.2f} s ({min(this):.2f}-{max(this):.2f}), baseline "
              f"{median(base):.2f} s ({min(base):.2f}-{max(base):.2f}): this / baseline {r[f'{case} ratio']:.2f}")
    print(f"  first photo written: this {median(r['this first written']):.2f} s, baseline "
          f"{median(r['baseline first written']):.2f} s; unchanged run imports: this {r['this unchanged imports']}, "
          f"baseline {r['baseline unchanged imports']}")


if __name__ == "__main__":
    main()
