"""A library of a million photos: add 100 real photos with `lookalike index`, then search it through HTTP.

    python -m bench.synthetic --size 1000000 --library L --photos P    # build it first (timed there)
    python -m bench.million --library L --photos P [--search-only]

Prints the index run's wall time less its embedding time (the suggestions of the new photos are
updated in the same command, and counted here), each web page's first and second response time,
then search by id through `lookalike serve`: p50, p99, server RSS.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.corpus import CLOTHING_SMALL
from bench.search_http import measure

CORPUS = CLOTHING_SMALL
CLI = "from lookalike.cli import main; main()"


def add_photos(library: Path, photos: Path, count: int) -> dict:
    """Copy `count` real photos into the root and index: wall seconds, and the report's own figures."""
    added = photos / f"added-{int(time.time())}"
    added.mkdir()
    for src in sorted(CORPUS.rglob("*.jpg"))[:count]:
        shutil.copyfile(src, added / src.name)
    started = time.perf_counter()
    code = (
        "import json, sys, logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(relativeCreated)8.0f ms %(name)s %(message)s')\n"
        "from indexer.settings import Settings\n"
        "from search.refresh import index_and_refresh\n"
        f"r = index_and_refresh(Settings.from_env(library={str(library)!r}), "
        f"__import__('pathlib').Path({str(photos)!r}), progress=False).report\n"
        "print(json.dumps({'indexed': r.indexed, 'embed_s': r.embed_seconds, 'index_s': r.seconds}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    import json

    facts = json.loads(out.stdout.strip().splitlines()[-1])
    print(out.stderr[-4000:], flush=True)  # the run's log: where the time went
    # Embedding ran in worker processes (summed over them): count it as the wall time it took.
    facts.update(wall_s=wall, folder=added.name)
    return facts


PAGES = ("/", "/?folder=000/00", "/images/{id}", "/queue", "/api/queue?limit=20", "/about", "/map", "/api/map",
         "/api/status", "/duplicates")  # the slowest last


PAGE_TIMEOUT = 120


def page_times(library: Path, image_id: int) -> tuple[dict[str, tuple[float, float, int]], tuple[float, float]]:
    """Each page's (first, second) response time in seconds and status, on a fresh server; its RSS."""
    import http.client

    from bench.search_http import Server

    server = Server(library)
    out = {}
    try:
        started = time.perf_counter()
        server.wait_warm()
        print(f"  serve's warm-up (model, suggestions, queue order): {time.perf_counter() - started:.1f}s",
              flush=True)
        for page in PAGES:
            url = page.format(id=image_id)
            times, status = [], 0
            for _ in range(2):
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PAGE_TIMEOUT)
                started = time.perf_counter()
                try:
                    conn.request("GET", url)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except TimeoutError:
                    status = 0  # still computing: said below
                times.append(time.perf_counter() - started)
                conn.close()
                if not status:
                    break
            out[url] = (times[0], times[-1], status)
            said = f"then {times[1]:.3f}s ({status})" if status else f"no answer within {PAGE_TIMEOUT}s"
            print(f"  {url}: first {times[0]:.2f}s, {said}", flush=True)
        rss = server.rss_mb()
    finally:
        server.stop()
    return out, rss


def new_suggestions(library: Path, folder: str) -> tuple[int, int]:
    """(photos under `folder`, how many of them have a stored suggestion)."""
    from sqlalchemy import func, select

    from indexer.library import Library
    from indexer.schema import Image, SuggestedLabel

    with Library(library) as lib, lib.Session() as s:
        ids = s.scalars(select(Image.id).where(Image.folder == folder)).all()
        have = s.scalar(select(func.count()).select_from(SuggestedLabel).where(SuggestedLabel.image_id.in_(ids)))
    return len(ids), int(have or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.million", description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--search-only", action="store_true", help="only the search by id and by upload")
    args = parser.parse_args(argv)
    from bench.machine import describe

    print(" ".join(f"{k}={v}" for k, v in describe().items()), flush=True)
    if not args.search_only:
        facts = add_photos(args.library, args.photos, args.add)
        print(f"add {args.add}: {facts}; beyond embedding {facts['wall_s'] - facts['embed_s']:.1f}s", flush=True)
        count, suggested = new_suggestions(args.library, facts["folder"])
        print(f"the new photos' suggestions: {suggested} of {count} stored when the command returned", flush=True)
        _, (rss, peak) = page_times(args.library, image_id=1)
        print(f"pages served with RSS {rss:.0f} MB (peak {peak:.0f} MB)", flush=True)
    uploads = [p.read_bytes() for p in sorted(CORPUS.rglob("*.jpg"))[:20]]
    from indexer.library import Library

    with Library(args.library) as lib:
        n = lib.counts()["indexed"]
    res = measure(args.library, n, uploads, quick=True, clients=args.clients)
    print(f"search by id, 1 client: p50 {res['id_1'].pct(50):.1f} ms p99 {res['id_1'].pct(99):.1f} ms; "
          f"{args.clients} clients p50 {res['id_n'].pct(50):.1f} ms p99 {res['id_n'].pct(99):.1f} ms; "
          f"upload p50 {res['upload_1'].pct(50):.0f} ms; server RSS {res['rss_mb']:.0f} MB "
          f"(peak {res['peak_rss_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
