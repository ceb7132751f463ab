"""`python -m bench.speed`: the CPU indexing layout's breakdown, ratios and warm start, alone.

What `python -m bench` measures about indexing speed (bench/stages.py, bench/warm_start.py, the
layouts of bench/indexing.py), without its search and re-scan sections, in a few minutes; written
to its own BENCHMARKS.md section per machine kind ("speed amx", "speed avx2", ...), so that the
`python -m bench` section of the same machine stays as that run left it.

    python -m bench.speed              # 600 photos, 3 repetitions
    python -m bench.speed --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import commands, stages, warm_start
from bench.__main__ import CORPUS, REPO
from bench.indexing import copy_tree, cpu_seconds, index_once, photo_files
from bench.machine import describe, kind
from bench.report import stage_rows, warm_rows
from bench.sections import write_section


def model_only(engine, batch: int, batches: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The engine alone on a ready uint8 batch: (images per wall second, per CPU-second)."""
    import numpy as np

    crop = engine.backbone.preprocess.crop
    x = np.random.default_rng(0).integers(0, 256, (batch, 3, crop, crop), dtype=np.uint8)
    engine.embed_uint8(x)  # compiled, warmed
    cpu, started = cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        engine.embed_uint8(x)
    n = batch * batches
    return n / (time.perf_counter() - started), n / (cpu_seconds() - cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-warm", action="store_true", help="skip the warm start (it indexes the whole corpus)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from indexer.backbone import Backbone
    from indexer.engines import describe as engine_name
    from indexer.engines import make_engine

    machine = describe()
    began = time.perf_counter()
    backbone = Backbone(device="auto")
    engine = make_engine(backbone, "auto")
    group = args.batch_size * int(getattr(engine, "streams", 1))  # one whole batch per stream
    files = photo_files(args.corpus, args.photos)
    runs: dict[str, list[tuple[float, float]]] = {"model": [], "threads": [], "processes": []}
    ratios: dict[str, list[float]] = {"model": [], "model_cpu": [], "processes": [], "naive": []}
    walls: dict[str, list[float]] = {"cli": [], "naive": []}
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        work = Path(tmp)
        photos = copy_tree(files, args.corpus, work / "photos")
        say(f"stages alone, {len(files)} photos ...")
        breakdown = stages.profile(files, args.batch_size)
        startup = stages.startup(args.reps)
        for rep in range(args.reps):
            model = model_only(engine, group, 8)
            threads = index_once(photos, backbone, args.batch_size, None)
            processes = index_once(photos, backbone, args.batch_size, None, embed_in_workers=True)
            after = model_only(engine, group, 8)
            bound = (statistics.mean([model[0], after[0]]), statistics.mean([model[1], after[1]]))
            cli, naive = commands.index_wall(photos), commands.naive_wall(photos)
            runs["model"].append(bound)
            runs["threads"].append((threads["rate"], threads["cpu_rate"]))
            runs["processes"].append((processes["rate"], processes["cpu_rate"]))
            ratios["model"].append(threads["rate"] / bound[0])
            ratios["model_cpu"].append(threads["cpu_rate"] / bound[1])
            ratios["processes"].append(threads["rate"] / processes["rate"])
            ratios["naive"].append(naive / cli)
            walls["cli"].append(cli)
            walls["naive"].append(naive)
            say(f"  rep {rep + 1}/{args.reps}: model {bound[0]:.1f} img/s, threads {threads['rate']:.1f}, "
                f"processes {processes['rate']:.1f}; ratio {ratios['model'][-1]:.2f} "
                f"(CPU {ratios['model_cpu'][-1]:.2f}); "
                f"lookalike index {cli:.1f}s vs naive {naive:.1f}s; load {os.getloadavg()[0]:.1f}")
        warm = None if args.no_warm else warm_start.run(args.corpus, work, args.reps, say)
    load_end = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = markdown(machine, load_end, engine_name(engine), args, len(files), group, breakdown, startup, runs,
                    ratios, walls, warm, time.perf_counter() - began)
    print(text)
    write_section(args.out, f"speed {kind()}", text)
    say(f"wrote {args.out}")
    return 0


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _runs(values: list[float], digits: int = 2) -> str:
    return "(runs " + ", ".join(f"{v:.{digits}f}" for v in values) + ")"


def markdown(machine, load_end, engine, args, n, group, breakdown, startup, runs, ratios, walls, warm,  # type: ignore[no-untyped-def]
             seconds) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rate = {k: [w for w, _ in v] for k, v in runs.items()}
    cpu = {k: [c for _, c in v] for k, v in runs.items()}
    rows = [
        (f"model only, {engine}, one engine, {group} photos per call (one batch of {args.batch_size} per stream)",
         f"{_med(rate['model']):.1f} img/s {_runs(rate['model'], 1)}; {_med(cpu['model']):.1f} img per CPU-second",
         "", ""),
        (f"end to end, default layout (decode threads feeding one engine), {n} photos",
         f"{_med(rate['threads']):.1f} img/s {_runs(rate['threads'], 1)}; {_med(cpu['threads']):.1f} img per "
         f"CPU-second", "", ""),
        ("end to end, process layout (workers decode and embed with one-thread engines)",
         f"{_med(rate['processes']):.1f} img/s {_runs(rate['processes'], 1)}; {_med(cpu['processes']):.1f} img per "
         f"CPU-second", "", ""),
        ("end to end / model only (the bound measured right before and after)",
         f"{_med(ratios['model']):.2f} {_runs(ratios['model'])}; by CPU time {_med(ratios['model_cpu']):.2f} "
         f"{_runs(ratios['model_cpu'])}", "≥ 0.85", "✓" if _med(ratios["model"]) >= 0.85 else "✗"),
        ("default layout / process layout (wall)", f"{_med(ratios['processes']):.2f} {_runs(ratios['processes'])}",
         "", ""),
        (f"`lookalike index` of {n} photos from scratch vs the naive script, wall with start-up",
         f"{_med(ratios['naive']):.1f}x faster {_runs(ratios['naive'], 1)}: {_med(walls['cli']):.1f} s vs "
         f"{_med(walls['naive']):.1f} s", "≥ 8", "✓" if _med(ratios["naive"]) >= 8 else "✗"),
        *stage_rows(breakdown, startup),
        *(warm_rows(warm) if warm else []),
    ]
    out = [
        "## `python -m bench.speed`: the CPU layout's breakdown, ratios and warm start",
        "",
        f"Written by `python -m bench.speed` on {when} ({seconds / 60:.0f} min), {args.reps} repetitions, "
        "medians; every ratio is taken within one repetition, from figures measured side by side. "
        f"Load average at the end: {load_end} (the machine was shared: the wall-clock figures are "
        "slowed by other jobs; the CPU-time ones much less).",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
        "| measurement | result | goal | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "Stages alone are bench/stages.py (`python -m bench.stages`): each stage on the same photos in "
        "one process, CPU time. The warm start is bench/warm_start.py: fresh `lookalike index` "
        "processes on a library of the whole corpus."
        + ("" if kind() == "cuda" else " No GPU was available to this run: the GPU path is not measured here."),
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
