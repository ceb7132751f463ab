"""`lookalike serve --watch` (issue 19): how soon a copied photo is searchable, and a burst's rate.

    python -m bench.watch [--corpus DIR] [--latency 20] [--burst 1000] [--write]

A library of 100 corpus photos is served with `--watch` (the real command, a child process). Then:

- latency: one new photo at a time is copied into the watched folder, and the clock runs until a
  search with that photo's bytes (POST /api/search, k=1) returns it: the median of `--latency`
  photos (goal: within 5 s on 2 cores);
- burst: `--burst` photos are copied in at once; photos/s from the first copy until all are indexed
  and the watcher is idle (copying, debounce, suggestions included), against `lookalike index`'s
  own photos/s on the same photos added to a copy of the same library, measured in the same run
  (goal: >= 0.9x).

Prints the figures with the CPU's flags and the load average; `--write` puts them in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.corpus import CLOTHING_SMALL
from bench.machine import cpu_flags
from bench.sections import write_section

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = CLOTHING_SMALL
LOOKALIKE = [sys.executable, "-c", "from lookalike.cli import main; main()"]


def lookalike(*args: str) -> str:
    out = subprocess.run([*LOOKALIKE, *args], capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"lookalike {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def copy(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, folder / f"{f.parent.name}-{f.name}")


class Server:
    def __init__(self, library: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*LOOKALIKE, "serve", "--library", str(library), "--port", "0", "--watch"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("serving "):
                self.url = line.split(" on ", 1)[1].split()[0]
                break
        else:
            raise SystemExit("the server did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe drained

    def status(self) -> dict:
        with urllib.request.urlopen(self.url + "api/status", timeout=600) as r:
            return json.load(r)

    def top_hit(self, data: bytes) -> str | None:
        req = urllib.request.Request(self.url + "api/search?k=1", data=data, method="POST",
                                     headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=600) as r:
            results = json.load(r)["results"]
        return results[0]["image"]["path"] if results else None

    def wait_idle(self, indexed: int, timeout: float = 1800) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if s["indexed"] >= indexed and s["watch"]["state"] == "idle" and s["watch"]["waiting"] == 0:
                return
            time.sleep(0.05)
        raise SystemExit(f"not idle with {indexed} photos after {timeout} s: {self.status()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def searchable_after(server: Server, photo: Path, folder: Path) -> float:
    """Seconds from copying `photo` into `folder` until a search with its bytes finds it first."""
    data = photo.read_bytes()
    rel = f"{folder.name}/{photo.parent.name}-{photo.name}"
    before = server.status()["indexed"]
    started = time.perf_counter()
    copy([photo], folder)
    while server.status()["indexed"] <= before:  # a cheap poll; then the search itself
        time.sleep(0.02)
    while server.top_hit(data) != rel:
        time.sleep(0.02)
    return time.perf_counter() - started


def index_rate(base: list[Path], burst: list[Path], work: Path) -> dict:
    """`lookalike index` adding the burst's photos to a library of the same 100 photos as the served one."""
    root, library = work / "index-photos", work / "index-library"
    copy(base, root / "base")
    lookalike("index", str(root), "--library", str(library), "--quiet")
    copy(burst, root / "burst")
    started = time.perf_counter()
    out = lookalike("index", str(root), "--library", str(library), "--quiet")
    wall = time.perf_counter() - started
    rate = float(re.search(r"\(([\d.]+) img/s", out).group(1))  # type: ignore[union-attr]
    return {"photos_per_s": rate, "wall_s": wall, "wall_photos_per_s": len(burst) / wall, "line": out.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--latency", type=int, default=20, help="photos copied one at a time")
    parser.add_argument("--burst", type=int, default=1000, help="photos copied at once")
    parser.add_argument("--write", action="store_true", help="write the figures into BENCHMARKS.md")
    args = parser.parse_args(argv)
    files = sorted(args.corpus.rglob("*.jpg"))
    if len(files) < 100 + args.latency + args.burst + 1:
        raise SystemExit(f"{args.corpus}: not enough photos")
    base, probes, burst = files[:100], files[100 : 101 + args.latency], files[-args.burst :]
    work = Path(tempfile.mkdtemp(prefix="lookalike-bench-watch-"))
    try:
        root, library = work / "photos", work / "library"
        copy(base, root / "base")
        lookalike("index", str(root), "--library", str(library), "--quiet")
        baseline = index_rate(base, burst, work)
        print(f"lookalike index: {baseline['line']}  (wall {baseline['wall_s']:.1f} s with start-up)")

        server = Server(library)
        try:
            server.wait_idle(100)
            searchable_after(server, probes[0], root / "warm")  # the engine loaded, the first batch paid
            load_before = os.getloadavg()[0]
            latencies = [searchable_after(server, p, root / "new") for p in probes[1:]]
            median = statistics.median(latencies)
            print(f"searchable after copy: median {median:.2f} s of {len(latencies)} "
                  f"(min {min(latencies):.2f}, max {max(latencies):.2f})  load {load_before:.1f}")
            indexed = server.status()["indexed"]
            started = time.perf_counter()
            copy(burst, root / "burst")
            server.wait_idle(indexed + len(burst))
            seconds = time.perf_counter() - started
            load_after = os.getloadavg()[0]
        finally:
            server.stop()
        rate = len(burst) / seconds
        ratio = rate / baseline["photos_per_s"]
        print(f"burst of {len(burst)}: {seconds:.1f} s, {rate:.1f} photos/s = {ratio:.2f}x lookalike index's "
              f"{baseline['photos_per_s']:.1f} img/s ({rate / baseline['wall_photos_per_s']:.2f}x its wall-clock "
              f"rate)  load {load_after:.1f}")
        flags = cpu_flags()
        print(f"CPU flags: {flags}")
        if args.write:
            write_section(REPO / "BENCHMARKS.md", "watch", section(
                median, latencies, rate, ratio, baseline, len(burst), flags, load_before, load_after))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def section(median, latencies, rate, ratio, baseline, burst, flags, load_before, load_after) -> str:
    def row(*cells: str) -> str:
        return "| " + " | ".join(cells) + " |"

    def ok(met: bool) -> str:
        return "**met**" if met else "**missed**"

    wall = rate / baseline["wall_photos_per_s"]
    return "\n".join([
        "## Watched folder (`serve --watch`)",
        "",
        "`python -m bench.watch` (clothing_small photos; the real `lookalike serve --watch` in a child process,",
        f"a library of 100 photos; CPU flags {flags}; 2 cores shared with other work).",
        "",
        row("what", "measured", "goal", ""),
        row("---", "---", "---", "---"),
        row(f"a copied photo searchable (copy -> a search with its bytes returns it), median of {len(latencies)}",
            f"{median:.2f} s (min {min(latencies):.2f}, max {max(latencies):.2f}; load average {load_before:.1f})",
            "<= 5 s", ok(median <= 5)),
        row(f"burst of {burst} photos copied at once, until all are indexed and suggestions refreshed",
            f"{rate:.1f} photos/s = **{ratio:.2f}x** `lookalike index`'s {baseline['photos_per_s']:.1f} img/s on "
            f"the same photos in the same run ({wall:.2f}x its wall-clock rate with start-up; load average "
            f"{load_after:.1f})", ">= 0.9x", ok(ratio >= 0.9)),
        "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
