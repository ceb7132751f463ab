"""The collection map: layout quality on real photos, layout time at 100k and 1M, the Map page at 100k in Chromium.

    python -m bench.map [--clothing-library DIR] [--sizes 100000,1000000] [--page-size 100000]

- Quality: on an indexed clothing_small library (`lookalike index ../shared/corpora/clothing_small`),
  each method's k-NN preservation (share of a photo's 10 nearest neighbours by cosine that are
  also among its 10 nearest on the map) and the 10-NN label accuracy on the map (leave-one-out,
  the folder's class as label) beside the same vote in 1280-d.
- Layout time and peak memory in process on synthetic 1280-d vectors shaped like real embeddings
  (`bench.index_types.synthetic`), generated and reduced chunk by chunk as the library reads them.
- End to end: a synthetic library of `--page-size` photos in SQLite (bench.synthetic), `update_map`
  from the stored vectors to the stored points.
- The page: waitress serving that library, Chromium (Playwright, /usr/bin/chromium, software WebGL)
  opening /map: time from navigation to the first frame with every point drawn (data transfer
  included), the /api/map body size, and requestAnimationFrame intervals during a scripted drag
  and wheel zoom.

Writes its section of BENCHMARKS.md (between `<!-- map -->` markers) unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.index_types import synthetic
from bench.sections import write_section

REPO = Path(__file__).resolve().parents[1]
CHUNK = 50_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """CPU seconds of this process, all threads: what other jobs' time slices do not inflate."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_flags() -> str:
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "unknown"
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    lacking = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f not in flags]
    return ", ".join(have) + ("; no " + ", no ".join(lacking) if lacking else "")


# -- quality ----------------------------------------------------------------------------------------


def _knn(x: np.ndarray, k: int, inner_product: bool) -> np.ndarray:
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1]) if inner_product else faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(x, k + 1)[1][:, 1:]


def quality(vectors: np.ndarray, xy: np.ndarray, labels: np.ndarray, k: int = 10) -> tuple[float, float, float]:
    """(k-NN preservation, 2-D k-NN label accuracy, high-D k-NN label accuracy)."""
    high, low = _knn(vectors, k, True), _knn(xy, k, False)
    kept = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(high, low, strict=True)]))

    def accuracy(neighbours):
        votes = [np.bincount(labels[row]).argmax() for row in neighbours]
        return float(np.mean(np.array(votes) == labels))

    return kept, accuracy(low), accuracy(high)


def run_quality(library_path: Path, say) -> list[dict]:
    from sqlalchemy import select

    from indexer.library import Library
    from indexer.schema import Image
    from search.map import layout

    with Library(library_path) as library:
        ids, vectors = library.stored_vectors()
        with library.Session() as s:
            folder = dict(s.execute(select(Image.id, Image.folder)).all())
    names = [folder[int(i)].rsplit("/", 1)[-1] for i in ids]
    classes = sorted(set(names))
    labels = np.array([classes.index(n) for n in names])
    rows = []
    baseline = layout.learn_projection(vectors).reduce(vectors)[:, :2]
    kept, acc2, acc_hi = quality(vectors, baseline, labels)
    rows.append({"method": "PCA, first 2 components (baseline)", "seconds": None, "kept": kept, "acc2": acc2,
                 "acc_hi": acc_hi})
    for method in layout.available_methods():
        for seed in (0, 1):
            started = time.perf_counter()
            result = layout.lay_out(ids, layout.in_chunks(ids, vectors), method=method, seed=seed)
            seconds = time.perf_counter() - started
            kept, acc2, acc_hi = quality(vectors, result.xy, labels)
            say(f"  {method} seed {seed}: {seconds:.1f}s kept {kept:.3f} acc {acc2:.3f}")
            rows.append({"method": f"{method} (seed {seed})", "seconds": seconds, "kept": kept, "acc2": acc2,
                         "acc_hi": acc_hi})
    return rows


# -- layout time ------------------------------------------------------------------------------------


def synthetic_chunks(n: int):
    def chunks():
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            yield np.arange(start + 1, start + m + 1, dtype=np.int64), synthetic(m, seed=1000 + start)

    return chunks


def run_layout(n: int, say) -> dict:
    from search.map import layout

    ids = np.arange(1, n + 1, dtype=np.int64)
    chunks = synthetic_chunks(n)

    def fetch(wanted):
        parts = [(i[np.isin(i, wanted)], v[np.isin(i, wanted)]) for i, v in chunks()]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    before = peak_rss_mb()
    started, cpu = time.perf_counter(), cpu_s()
    result = layout.lay_out(ids, chunks, fetch=fetch)
    seconds, cpu = time.perf_counter() - started, cpu_s() - cpu
    say(f"  layout of {n}: {seconds:.1f}s ({cpu:.0f} CPU s), peak RSS {peak_rss_mb():.0f} MB")
    return {"n": n, "seconds": seconds, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before,
            "sample": len(result.fit.sample_ids), "result": result}


# -- a library and its page ------------------------------------------------------------------------------


class _Identity:
    """What fill_library asks of a backbone, without loading torch."""

    def identity(self) -> dict[str, str]:
        return {"backbone": "synthetic", "weights": "synthetic", "preprocessing": "none", "dim": "1280"}


def build_library(path: Path, n: int, say) -> dict:
    from sqlalchemy import insert

    from bench.synthetic import fill_library
    from indexer.schema import IMPORTED, Label, utcnow
    from search.map.store import update_map

    started = time.perf_counter()
    files = [(f"{i // 1000:04d}/synthetic_{i:07d}.jpg", 20_000, 1.7e9) for i in range(n)]
    library = fill_library(path, path / "no-photos", files, _Identity(),  # type: ignore[arg-type]
                           lambda start, count: synthetic(count, seed=1000 + start))
    # A fifth of the photos labelled, as a collection being labelled would be: the page colours them.
    rng = np.random.default_rng(0)
    labelled = np.flatnonzero(rng.random(n) < 0.2) + 1
    with library.Session.begin() as s:
        s.execute(insert(Label), [{"image_id": int(i), "label": f"class {i % 12}", "source": IMPORTED,
                                   "set_at": utcnow()} for i in labelled])
    rows_s = time.perf_counter() - started
    # A flat FAISS file, so that the server starts at once: the page does not search, and building
    # the HNSW index the library would choose is `lookalike index`'s work, not the map's.
    from indexer.vectors import VectorIndex

    ids, vectors = library.stored_vectors()
    library.save_vectors(VectorIndex.build(vectors.shape[1], ids, vectors, kind="flat"), clean=False)
    del vectors
    say(f"  {n} rows in {rows_s:.0f}s; computing the map from SQLite ...")
    cpu = cpu_s()
    report = update_map(library)
    cpu = cpu_s() - cpu
    say(f"  {report.summary()} ({cpu:.0f} CPU s)")
    library.close()
    return {"rows_s": rows_s, "map_s": report.seconds, "map_cpu_s": cpu, "sample": report.sample}


def serve(library_path: Path):
    """waitress on a free port in a thread, as `lookalike serve` runs it; returns (url, stop)."""
    from waitress import create_server

    from web import create_app
    from web.context import services
    from web.map_view import JOB, MapJob
    from web.settings import Settings

    app = create_app(Settings(library=library_path))
    with app.app_context():
        svc = services()
        job = MapJob(svc.library, svc.labeller)
    # The k-NN suggestions of 100k photos are `lookalike serve`'s warm-up, not this measurement.
    job._suggestions_ready = True
    app.extensions[JOB] = job
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def stop():
        server.close()

    return f"http://127.0.0.1:{server.effective_port}", stop


FRAME_RECORDER = """() => {
  window.__frames = []; window.__recording = true;
  let last = performance.now();
  const tick = (t) => {
    window.__frames.push(t - last); last = t;
    if (window.__recording) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def run_page(url: str, reps: int, say) -> dict:
    from playwright.sync_api import sync_playwright

    out: dict = {"interactive_ms": [], "api_ms": [], "frames": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        for rep in range(reps):
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            page = context.new_page()
            page.goto(url + "/map")
            while not page.evaluate("() => !!(window.LKMap && LKMap.drawnAt)"):
                time.sleep(0.02)
            interactive = page.evaluate("() => LKMap.drawnAt")
            api = page.evaluate("() => performance.getEntriesByType('resource')"
                                ".filter(e => e.name.endsWith('/api/map'))"
                                ".map(e => [e.responseEnd - e.requestStart, e.encodedBodySize])[0]")
            out["interactive_ms"].append(interactive)
            out["api_ms"].append(api[0])
            out["body_bytes"] = api[1]
            out["points"] = page.evaluate("() => LKMap.points().id.length")
            out["renderer"] = page.evaluate("() => LKMap.renderer")
            say(f"  visit {rep + 1}: interactive {interactive:.0f} ms, /api/map {api[0]:.0f} ms, {api[1] / 1e6:.1f} MB")
            if rep == reps - 1:
                box = page.locator("#map-stage").bounding_box()
                assert box is not None
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(cx, cy)
                page.evaluate(FRAME_RECORDER)
                page.mouse.down()
                page.mouse.move(cx + 300, cy + 150, steps=60)
                page.mouse.move(cx - 200, cy - 100, steps=60)
                page.mouse.up()
                for _ in range(40):
                    page.mouse.wheel(0, -120)
                    page.wait_for_timeout(16)
                for _ in range(40):
                    page.mouse.wheel(0, 120)
                    page.wait_for_timeout(16)
                frames = page.evaluate("() => { window.__recording = false; return window.__frames.slice(1); }")
                out["frames"] = frames
                out["draws"] = page.evaluate("() => LKMap.draws")
            context.close()
        browser.close()
    return out


# -- report -----------------------------------------------------------------------------------------


def markdown(facts: dict) -> str:
    lines = ["## Collection map", "",
             f"Written by `python -m bench.map` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             f"CPU: {facts['cpu']} ({facts['flags']}), {facts['cores']} cores shared with other jobs "
             f"(load average {facts['load']} at start), Chromium {facts.get('chromium', '?')} headless with "
             "software WebGL (SwiftShader): a real GPU draws faster.", ""]
    if facts.get("quality"):
        lines += ["### Layout quality on clothing_small (3,781 photos, 10 classes)", "",
                  "| method | seconds | 10-NN kept on the map | 10-NN label accuracy on the map "
                  "| same vote in 1280-d |",
                  "|---|---|---|---|---|"]
        for r in facts["quality"]:
            secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "–"
            lines.append(f"| {r['method']} | {secs} | {r['kept']:.3f} | {r['acc2']:.3f} | {r['acc_hi']:.3f} |")
        lines.append("")
    lines += ["### Speed", "", "| measurement | result | goal | |", "|---|---|---|---|"]
    for r in facts["layout"]:
        goal = "≤ 180 s" if r["n"] == 100_000 else "within memory"
        ok = "✓" if (r["n"] != 100_000 or r["seconds"] <= 180) else "✗"
        lines.append(f"| layout of {r['n']:,} synthetic 1280-d vectors in process (fit on {r['sample']:,}, the rest "
                     f"placed) | {r['seconds']:.0f} s ({r.get('cpu_s', float('nan')):.0f} CPU s), peak RSS "
                     f"{r['peak_rss_mb']:.0f} MB | {goal} | {ok} |")
    if facts.get("library"):
        lib = facts["library"]
        n = facts["page_size"]
        ok = "✓" if lib["map_s"] <= 180 else "✗"
        lines.append(f"| `update_map` on a {n:,}-photo library, SQLite to SQLite (read vectors, fit on "
                     f"{lib['sample']:,}, place, write points) | {lib['map_s']:.0f} s "
                     f"({lib.get('map_cpu_s', float('nan')):.0f} CPU s) | ≤ 180 s | {ok} |")
    if facts.get("page"):
        pg = facts["page"]
        n = facts["page_size"]
        med = float(np.median(pg["interactive_ms"]))
        frames = np.array(pg["frames"])
        lines += [
            f"| Map page, {pg['points']:,} points: navigation to first full frame, data transfer included "
            f"({pg['renderer']}) | median {med:.0f} ms (visits: {', '.join(f'{v:.0f}' for v in pg['interactive_ms'])}; "
            f"the first after the server started builds the JSON) | ≤ 2000 ms | {'✓' if med <= 2000 else '✗'} |",
            f"| GET /api/map at {n:,} points | {pg['body_bytes'] / 1e6:.1f} MB JSON; "
            f"{', '.join(f'{v:.0f}' for v in pg['api_ms'])} ms per visit | | |",
            f"| frame interval during a scripted drag and wheel zoom ({len(frames)} frames, "
            f"{pg.get('draws', '?')} redraws) | "
            f"median {np.median(frames):.1f} ms, p95 {np.percentile(frames, 95):.1f} ms, max {frames.max():.1f} ms | "
            f"no visible stutter (p95 ≤ 33 ms) | {'✓' if np.percentile(frames, 95) <= 33.4 else '✗'} |",
        ]
    lines += ["", "Reproduce: `python -m bench.map --clothing-library DIR` (DIR: clothing_small indexed with the "
              "default backbone). Layouts: `graph` is the default (numpy, no numba); `umap` needs "
              "`pip install 'lookalike[umap]'`. 1M points: the page gets a random 250,000 (said on the page)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import faiss

    parser = argparse.ArgumentParser(prog="python -m bench.map", description=__doc__.split("\n")[0])
    parser.add_argument("--clothing-library", type=Path, default=None, help="indexed clothing_small library")
    parser.add_argument("--sizes", default="100000,1000000", help="in-process layout sizes")
    parser.add_argument("--page-size", type=int, default=100_000, help="library size for end to end and the page")
    parser.add_argument("--visits", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import os
    import platform
    import subprocess

    facts: dict = {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags(),
                   "cores": len(os.sched_getaffinity(0)), "load": "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg()),
                   "faiss_threads": faiss.omp_get_max_threads(), "page_size": args.page_size}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            facts["cpu"] = line.split(":", 1)[1].strip()
            break
    try:
        facts["chromium"] = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True,
                                           timeout=30).stdout.split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    if args.clothing_library:
        say("quality on clothing_small ...")
        facts["quality"] = run_quality(args.clothing_library, say)
    with tempfile.TemporaryDirectory(prefix="lookalike-map-", dir=args.workdir) as tmp:
        if args.page_size:
            say(f"a {args.page_size}-photo library ...")
            path = Path(tmp) / "library"
            facts["library"] = build_library(path, args.page_size, say)
            url, stop = serve(path)
            try:
                say("the page in Chromium ...")
                facts["page"] = run_page(url, args.visits, say)
            finally:
                stop()
            shutil.rmtree(path, ignore_errors=True)
        facts["layout"] = []
        for n in sorted(int(s) for s in args.sizes.split(",") if s):
            say(f"layout of {n} in process ...")
            r = run_layout(n, say)
            r.pop("result")
            facts["layout"].append(r)
    text = markdown(facts)
    print(text)
    print(json.dumps({k: v for k, v in facts.items() if k != "page"}, default=str), file=sys.stderr)
    if not args.no_write:
        write_section(args.out, "map", text)
        say(f"wrote the map section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
