"""`python -m bench`: indexing throughput, re-scan, search through HTTP; prints a table and writes
BENCHMARKS.md at the repository root.

    python -m bench            # everything: the whole clothing corpus, search at 10k, 100k and 1M
    python -m bench --quick    # 600 photos, fewer requests: a few minutes
    python -m bench --search-sizes 10000,100000   # without 1M (which needs ~9 GB free memory, ~30 min)
    python -m bench --only indexing,rescan --search-sizes 10000,100000
    python -m bench.speed      # the CPU layout's breakdown, ratios and warm start alone (own section)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench import indexing, rescan, search_http, warm_start
from bench.corpus import CLOTHING_SMALL
from bench.machine import describe, kind
from bench.report import Report
from bench.sections import write_section

REPO = Path(__file__).resolve().parents[1]
CORPUS = CLOTHING_SMALL
SECTIONS = ("indexing", "rescan", "search", "warm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Indexing, re-scan and search benchmarks; writes BENCHMARKS.md.")
    parser.add_argument("--quick", action="store_true", help="600 photos, fewer requests")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="folder of real JPEG photos")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="pipeline workers (default: its own)")
    parser.add_argument("--cli-photos", type=int, default=600,
                        help="photos for `lookalike index` vs the naive script in fresh processes")
    parser.add_argument("--search-sizes", default=None,
                        help="library sizes for search (default 10000,100000,1000000)")
    parser.add_argument("--max-build-minutes", type=float, default=30,
                        help="skip a search library whose build would take longer (estimated)")
    parser.add_argument("--rescan-files", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a tmp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if not args.corpus.is_dir():
        parser.error(f"{args.corpus} is not a folder of photos (--corpus)")
    reps = args.reps or (2 if args.quick else 3)
    sizes = [int(s) for s in (args.search_sizes or "10000,100000,1000000").split(",") if s]

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = Report(machine=describe(), quick=args.quick, reps=reps)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        if "indexing" in sections or "rescan" in sections:
            say("indexing ...")
            report.indexing = indexing.run(args.corpus, work, quick=args.quick, reps=reps,
                                           batch_size=args.batch_size, workers=args.workers,
                                           cli_photos=args.cli_photos, say=say)
        if "rescan" in sections:
            say("re-scanning an unchanged library ...")
            report.rescan = run_rescans(args, work, report.indexing, reps, say)
        if "warm" in sections:
            say("warm start: `lookalike index` on an indexed library ...")
            report.warm = warm_start.run(args.corpus, work, reps, say)
        if "search" in sections:
            say("search through HTTP ...")
            report.search, report.search_skipped = search_http.run(
                work, sizes, args.corpus, quick=args.quick, clients=args.clients,
                max_build_s=60 * args.max_build_minutes, say=say)
    report.seconds = time.perf_counter() - started
    text = report.markdown()
    print(report.table())
    # One section per machine kind: a run on another CPU leaves this one's figures alone.
    write_section(args.out, f"bench {kind()}", text)
    say(f"wrote {args.out} ({report.seconds:.0f}s)")
    return 0


def run_rescans(args, work: Path, indexed, reps: int, say) -> dict:
    from indexer.backbone import Backbone

    backbone = Backbone(device="auto")
    seconds, files = rescan.rescan(indexed.photos, indexed.library, backbone, reps)
    out = {"clothing": {"files": files, "seconds": seconds}}
    say(f"  clothing: {files} files in {seconds:.2f}s")
    out["synthetic"] = rescan.synthetic_rescan(work, args.rescan_files, reps, backbone, say)
    say(f"  synthetic: {out['synthetic']['files']} files in {out['synthetic']['seconds']:.2f}s")
    return out


if __name__ == "__main__":
    sys.exit(main())
