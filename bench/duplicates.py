"""`python -m bench.duplicates`: precision and recall of near-duplicate detection, beside imagededup.

    python -m bench.duplicates                 # edited copies, neardup, all of clothing_small, 100k timing
    python -m bench.duplicates --quick         # fewer photos; no whole-corpus run, 20k timing
    python -m bench.duplicates --no-write      # print only

Edited copies: originals drawn from clothing_small (per class), each copied with every transform of
bench/copies.py, mixed with other photos of the same classes (hard negatives: the same kind of
garment, shot the same way). All files sit in one flat folder, indexed by the real pipeline into a
temporary library. Every method's pairs are joined into connected components, and a pair of files
counts as found when both are in one component (as the issue measures). Methods: lookalike's copies
tier, its signals alone (hash only; embedding + verification only), the old single threshold (cosine
0.95), and imagededup's PHash, DHash, WHash and AHash at their default (Hamming <= 10), measured in
the same run. The section "Near-duplicates" of BENCHMARKS.md is replaced with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from bench.copies import TRANSFORMS
from bench.hard_copies import HARD_TRANSFORMS

REPO = Path(__file__).resolve().parents[1]
# ../shared/corpora beside the checkout; a worktree one level deeper finds it one level up.
CORPORA = next((p / "shared" / "corpora" for p in (REPO.parent, REPO.parents[1])
                if (p / "shared" / "corpora").is_dir()), REPO.parent / "shared" / "corpora")
CLOTHING = CORPORA / "clothing_small"
NEARDUP = CORPORA / "neardup"
IMAGEDEDUP = ("PHash", "DHash", "WHash", "AHash")
SECTION = "## Near-duplicates"

log = logging.getLogger(__name__)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the edited-copies set ----------------------------------------------------------------------------


@dataclass
class CopySet:
    folder: Path
    group: dict[str, str]  # file name -> group (the original's stem; a negative is its own group)
    transform: dict[str, str]  # copy file name -> transform name
    original: dict[str, str]  # copy file name -> its original's file name


def known_pairs(corpus: Path) -> set[str]:
    """Files of the corpus's own listed duplicate pair (label noise): never used as negatives."""
    listed = corpus / "near_duplicate_pairs_found.csv"
    if not listed.exists():
        return set()
    with open(listed) as f:
        return {row[k] for row in csv.DictReader(f) for k in ("a", "b")}


def make_copy_set(corpus: Path, folder: Path, per_class: int, negatives_per_class: int, seed: int,
                  transforms: dict | None = None) -> CopySet:
    rng = random.Random(seed)
    skip = known_pairs(corpus)
    by_class: dict[str, list[Path]] = defaultdict(list)
    for f in sorted(corpus.rglob("*.jpg")):
        if f.relative_to(corpus).as_posix() not in skip:
            by_class[f.parent.name].append(f)
    folder.mkdir(parents=True)
    out = CopySet(folder, {}, {}, {})
    for cls, files in sorted(by_class.items()):
        chosen = rng.sample(files, min(len(files), per_class + negatives_per_class))
        for f in chosen[:per_class]:
            name = f"{cls}__{f.stem}.jpg"
            shutil.copyfile(f, folder / name)
            out.group[name] = f.stem
            img = Image.open(f).convert("RGB")
            for t, transform in (transforms or TRANSFORMS).items():
                copy = f"{cls}__{f.stem}__{t}.jpg"
                transform(img).save(folder / copy, quality=95)
                out.group[copy], out.transform[copy], out.original[copy] = f.stem, t, name
        for f in chosen[per_class:]:
            name = f"{cls}__{f.stem}.jpg"
            shutil.copyfile(f, folder / name)
            out.group[name] = name
    return out


# -- scoring ------------------------------------------------------------------------------------------


def components(pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
    roots: dict[str, int] = {}
    return {x: roots.setdefault(root(x), len(roots)) for x in list(parent)}


@dataclass
class Score:
    precision: float
    recall: float
    true_pairs: int
    found_pairs: int
    per_transform: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    missed: list[str] = field(default_factory=list)  # edited copies not grouped with their original


def score(pairs: Iterable[tuple[str, str]], group: dict[str, str], transform: dict[str, str] | None = None,
          original: dict[str, str] | None = None, seconds: float = 0.0) -> Score:
    """Pairwise precision and recall of the connected components of `pairs` against `group`."""
    comp = components(pairs)
    members: dict[int, list[str]] = defaultdict(list)
    for name, c in comp.items():
        members[c].append(name)
    found = correct = 0
    for names in members.values():
        for a, b in combinations(names, 2):
            found += 1
            correct += group.get(a) is not None and group.get(a) == group.get(b)
    by_group: dict[str, int] = defaultdict(int)
    for g in group.values():
        by_group[g] += 1
    true = sum(n * (n - 1) // 2 for n in by_group.values())
    per_t: dict[str, float] = {}
    missed: list[str] = []
    if transform and original:
        hits: dict[str, list[bool]] = defaultdict(list)
        for copy, t in transform.items():
            o = original[copy]
            hits[t].append(copy in comp and o in comp and comp[copy] == comp[o])
            if not hits[t][-1]:
                missed.append(copy)
        per_t = {t: sum(h) / len(h) for t, h in hits.items()}
    return Score(correct / found if found else 1.0, correct / true if true else 1.0, true, found, per_t, seconds,
                 sorted(missed))


# -- methods ------------------------------------------------------------------------------------------


def index(folder: Path, library_dir: Path, backbone, workers: int | None):
    from indexer.library import Library
    from indexer.pipeline import index_folder

    library = Library(library_dir, create=True)
    t0 = time.perf_counter()
    report = index_folder(folder, library, backbone, workers=workers)
    return library, time.perf_counter() - t0, report


def names_of(library) -> dict[int, str]:
    from sqlalchemy import select

    from indexer.schema import Image as Row

    with library.Session() as s:
        return dict(s.execute(select(Row.id, Row.path)).all())


@dataclass
class LookalikeRun:
    tiers: dict[str, list[tuple[str, str]]]  # method -> pairs of file names
    seconds: dict[str, float]
    verified: int  # pairs verification looked at
    candidates: int


def run_lookalike(library) -> LookalikeRun:
    from search.duplicates import candidates as d

    names = names_of(library)
    t0 = time.perf_counter()
    cand = d.candidates(library)
    t1 = time.perf_counter()
    files = d.file_verifier(library)  # keeps this run's verdicts: the ablations below reuse them
    copies = d.copy_pairs(cand, files)
    t2 = time.perf_counter()
    verified = files.verified
    real = files
    hash_only = d.copy_pairs(cand, None)
    t_hash = time.perf_counter()
    no_hash = d.Candidates(cosine=cand.cosine, low_quality=cand.low_quality)
    embed_verified = d.copy_pairs(no_hash, real)
    t3 = time.perf_counter()
    old = d.find_pairs(library, d.DEFAULT_THRESHOLD)
    t4 = time.perf_counter()

    def pairs(ps) -> list[tuple[str, str]]:
        return [(names[p.a], names[p.b]) for p in ps]

    return LookalikeRun(
        tiers={
            "lookalike copies tier": pairs(copies),
            f"  its hash alone (PDQ <= {d.HASH_SURE})": pairs(hash_only),
            "  its embedding candidates + verification alone": pairs(embed_verified),
            "lookalike old: cosine >= 0.95": [(names[a], names[b]) for a, b, _ in old],
        },
        seconds={"lookalike copies tier": t2 - t0, "lookalike old: cosine >= 0.95": t4 - t3,
                 "candidates": t1 - t0, f"  its hash alone (PDQ <= {d.HASH_SURE})": t_hash - t2},
        verified=verified,
        candidates=len(set(cand.cosine) | set(cand.hash_distance)),
    )


PDQ_MATCH = 31  # PDQ's own recommended match threshold


def run_pdq(library) -> tuple[list[tuple[str, str]], float]:
    """Pairs whose stored whole-photo PDQ hashes (no mirror, no turns) are within PDQ_MATCH bits."""
    from indexer.hashes import hamming
    from search.duplicates.candidates import stored_hashes

    names = names_of(library)
    t0 = time.perf_counter()
    h = stored_hashes(library)
    codes = [c.tobytes() for c in h.codes]
    pairs = [(names[int(h.ids[i])], names[int(h.ids[j])]) for i, j in combinations(range(len(codes)), 2)
             if hamming(codes[i], codes[j]) <= PDQ_MATCH]
    return pairs, time.perf_counter() - t0


def run_imagededup(folder: Path, method: str) -> tuple[list[tuple[str, str]], float]:
    import imagededup.methods as m

    hasher = getattr(m, method)(verbose=False)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        found = hasher.find_duplicates(image_dir=folder, max_distance_threshold=10, num_enc_workers=2,
                                       num_dist_workers=2)
    seconds = time.perf_counter() - t0
    return [(a, b) for a, others in found.items() for b in others if a < b], seconds


def imagededup_available() -> bool:
    try:
        import imagededup.methods  # noqa: F401
    except ImportError:
        return False
    return True


# -- 100k timing --------------------------------------------------------------------------------------


def time_at_scale(work: Path, n: int, backbone, say: Callable[[str], None]) -> dict:
    """`find_tiers` on n photos of synthetic signals: random unit vectors and random hashes, with
    1 % planted copy pairs (a vector nudged, a hash with 8 bits flipped)."""
    from sqlalchemy import insert

    from bench.synthetic import fill_library, random_unit
    from indexer.hashes import ImageSignals, signal_rows
    from indexer.schema import ImageSignalsRow
    from search.duplicates.candidates import find_tiers

    rng = np.random.default_rng(7)
    dim = backbone.dim
    vectors = random_unit(n, dim, seed=3)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    planted = n // 100
    src = rng.choice(n // 2, planted, replace=False)
    dst = n // 2 + src
    vectors[dst] = vectors[src] + rng.standard_normal((planted, dim)).astype(np.float32) * 0.01
    vectors[dst] /= np.linalg.norm(vectors[dst], axis=1, keepdims=True)
    flips = np.zeros((planted, 256), dtype=np.uint8)
    for row in flips:
        row[rng.choice(256, 8, replace=False)] = 1
    codes[dst] = codes[src] ^ np.packbits(flips, axis=1)
    files = [(f"synthetic/{i:07d}.jpg", 1000, 0.0) for i in range(n)]
    t0 = time.perf_counter()
    library = fill_library(work / f"scale-{n}", work, files, backbone, lambda start, k: vectors[start : start + k])

    with library.Session.begin() as s:
        for start in range(0, n, 20_000):
            s.execute(
                insert(ImageSignalsRow),
                signal_rows(
                    (i + 1, ImageSignals(codes[i].tobytes(), codes[i].tobytes(), 100))
                    for i in range(start, min(n, start + 20_000))
                ),
            )
    library.save_vectors(library.build_vectors(), clean=True)
    built = time.perf_counter() - t0
    say(f"  {n} synthetic photos built in {built:.0f}s ({library.meta().get('index_type')})")
    runs = []
    found = 0
    for _ in range(2):
        t0 = time.perf_counter()
        tiers = find_tiers(library, verify=True)
        runs.append(time.perf_counter() - t0)
        found = len(tiers.copies)
    library.close()
    return {"n": n, "seconds": statistics.median(runs), "runs": runs, "planted": planted, "found": found,
            "index_type": "see meta", "build_seconds": built}


# -- report -------------------------------------------------------------------------------------------


def table(scores: dict[str, Score], transforms: list[str]) -> str:
    head = "| method | precision | recall (all pairs) | pairs found | seconds |\n|---|---|---|---|---|\n"
    rows = "".join(
        f"| {name} | {s.precision:.3f} | {s.recall:.3f} | {s.found_pairs} | {s.seconds:.1f} |\n"
        for name, s in scores.items()
    )
    per = ""
    if transforms:
        names = list(scores)
        per = "\n| transform | " + " | ".join(n.strip() for n in names) + " |\n|---|" + "---|" * len(names) + "\n"
        for t in transforms:
            cells = (f"{scores[n].per_transform.get(t, float('nan')):.2f}" for n in names)
            per += f"| {t} | " + " | ".join(cells) + " |\n"
    return head + rows + per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.duplicates", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 originals per class, no whole-corpus run")
    parser.add_argument("--per-class", type=int, default=None, help="originals per class (default 12)")
    parser.add_argument("--negatives", type=int, default=None, help="hard negatives per class (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=None, help="synthetic library size to time (100000)")
    parser.add_argument("--skip", default="",
                        help="comma-separated sections to leave out: "
                        "copies,hard,imagededup,neardup,clothing,speed,scale")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "last-duplicates.json",
                        help="JSON file the results are saved to, section by section")
    parser.add_argument("--report", type=Path, nargs="+", default=None,
                        help="only write the report from these results files (runs split in parts)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.report:
        results: dict = {}
        for f in args.report:
            part = json.loads(f.read_text())
            results["seconds"] = results.get("seconds", 0) + part.pop("seconds", 0)
            results.update(part)
        report(results, args.no_write)
        return 0
    if not CLOTHING.is_dir():
        parser.error(f"{CLOTHING} is not here")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    per_class = args.per_class or (4 if args.quick else 12)
    negatives = args.negatives or (15 if args.quick else 40)
    scale = args.scale or (20_000 if args.quick else 100_000)

    from bench.machine import describe
    from indexer.backbone import Backbone

    backbone = Backbone(device="cpu")
    results = {"machine": describe(), "per_class": per_class, "negatives": negatives}
    started = time.perf_counter()

    def save() -> None:
        results["seconds"] = time.perf_counter() - started
        args.results.write_text(json.dumps(results, indent=1, default=str))

    with tempfile.TemporaryDirectory(prefix="lookalike-dups-", dir=args.workdir) as tmp:
        work = Path(tmp)
        if "copies" not in skip:
            run_copies(work, backbone, args.workers, per_class, negatives, args.seed, skip, results)
            save()
        if "hard" not in skip:
            # Other originals (another seed) than the ordinary set's, each with every hard edit.
            run_copies(work, backbone, args.workers, per_class, negatives, args.seed + 1, skip, results,
                       HARD_TRANSFORMS, "hard_")
            save()
        if "neardup" not in skip and (NEARDUP / "ground_truth.json").exists():
            say("neardup ...")
            results["neardup"] = run_neardup(work, backbone, args.workers, skip)
            save()
        if "clothing" not in skip and not args.quick:
            say("all of clothing_small ...")
            results["clothing"] = run_clothing(work, backbone, args.workers)
            save()
        if "speed" not in skip:
            say("indexing speed with and without the copies features ...")
            results["speed"] = indexing_speed(work, backbone, args.workers, reps=4)
            save()
        if "scale" not in skip:
            say(f"duplicates on {scale} synthetic photos ...")
            results["scale"] = time_at_scale(work, scale, backbone, say)
            save()
    report(results, args.no_write)
    return 0


def run_copies(work: Path, backbone, workers, per_class: int, negatives: int, seed: int, skip: set[str],
               results: dict, transforms: dict | None = None, name: str = "") -> None:
    """The edited-copies set (TRANSFORMS), or with `transforms` and `name` another set of edits, whose
    results go under keys prefixed by `name`."""
    transforms = transforms or TRANSFORMS
    say(f"making {name or 'ordinary'} edited copies: {per_class} originals per class, {negatives} negatives "
        "per class ...")
    cs = make_copy_set(CLOTHING, work / f"{name}photos", per_class, negatives, seed, transforms)
    results = results.setdefault(name.rstrip("_"), {}) if name else results
    results["files"] = len(cs.group)
    say(f"indexing {len(cs.group)} files ...")
    library, seconds, _ = index(cs.folder, work / f"{name}library", backbone, workers)
    results["index_seconds"] = seconds
    say("  lookalike ...")
    run = run_lookalike(library)
    scores = {
        name: score(pairs, cs.group, cs.transform, cs.original, run.seconds.get(name, 0.0))
        for name, pairs in run.tiers.items()
    }
    results["verified_pairs"], results["candidate_pairs"] = run.verified, run.candidates
    results["candidate_seconds"] = run.seconds["candidates"]
    pdq_pairs, pdq_seconds = run_pdq(library)
    scores[f"PDQ <= {PDQ_MATCH} (whole photo)"] = score(pdq_pairs, cs.group, cs.transform, cs.original, pdq_seconds)
    if "imagededup" not in skip and imagededup_available():
        for method in IMAGEDEDUP:
            say(f"  imagededup {method} ...")
            pairs, secs = run_imagededup(cs.folder, method)
            scores[f"imagededup {method} (<= 10)"] = score(pairs, cs.group, cs.transform, cs.original, secs)
    library.close()
    results["copies"] = {k: vars(v) for k, v in scores.items()}
    results["duplicates_seconds"] = run.seconds["lookalike copies tier"]
    say(table(scores, list(transforms)))


def report(results: dict, no_write: bool) -> None:
    text = markdown(results)
    print(text)
    if not no_write:
        write_section(REPO / "BENCHMARKS.md", text)
        say("updated BENCHMARKS.md")


def run_neardup(work: Path, backbone, workers: int | None, skip: set[str]) -> dict:
    truth = json.loads((NEARDUP / "ground_truth.json").read_text())
    group: dict[str, str] = {}
    for name, others in truth.items():
        group[name] = min([name, *others])
    folder = NEARDUP / "images"
    library, _, _ = index(folder, work / "neardup-library", backbone, workers)
    run = run_lookalike(library)
    library.close()
    out = {name: vars(score(pairs, group)) for name, pairs in run.tiers.items()}
    if "imagededup" not in skip and imagededup_available():
        pairs, secs = run_imagededup(folder, "PHash")
        out["imagededup PHash (<= 10)"] = vars(score(pairs, group, seconds=secs))
    return out


def run_clothing(work: Path, backbone, workers: int | None) -> dict:
    """Every photo of clothing_small: copies-tier pairs, each checked against the corpus's listed pair."""
    library, seconds, _ = index(CLOTHING, work / "clothing-library", backbone, workers)
    run = run_lookalike(library)
    library.close()
    listed = known_pairs(CLOTHING)
    pairs = run.tiers["lookalike copies tier"]
    return {
        "photos": sum(1 for _ in CLOTHING.rglob("*.jpg")),
        "copies_pairs": pairs,
        "not_listed": [p for p in pairs if not set(p) <= listed],
        "old_pairs": len(run.tiers["lookalike old: cosine >= 0.95"]),
        "seconds": run.seconds["lookalike copies tier"],
        "verified_pairs": run.verified,
        "candidate_pairs": run.candidates,
    }


def indexing_speed(work: Path, backbone, workers: int | None, reps: int) -> dict:
    """Images per second, and per CPU-second, of `lookalike index` with the copies tier's index-time
    features (indexer/features.py) and without them (the signals hook as it was before them),
    interleaved, on 600 clothing photos; and the CPU milliseconds per photo of each part, in one
    process."""
    from bench.indexing import cpu_seconds

    files = sorted(CLOTHING.rglob("*.jpg"))[:600]
    sub = work / "speed-photos"
    sub.mkdir()
    for i, f in enumerate(files):
        shutil.copyfile(f, sub / f"{i:04d}.jpg")
    library, _, _ = index(sub, work / "speed-warm-up", backbone, workers)  # converts and caches the model
    library.close()
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for r in range(reps):
        for on in (True, False) if r % 2 == 0 else (False, True):
            ctx = contextlib.nullcontext() if on else features_disabled()
            cpu0 = cpu_seconds()
            with ctx:
                library, seconds, _ = index(sub, work / f"speed-{r}-{on}", backbone, workers)
            library.close()
            runs[on].append((len(files) / seconds, len(files) / (cpu_seconds() - cpu0)))
    wall = [a[0] / b[0] for a, b in zip(runs[True], runs[False], strict=True)]
    cpu = [a[1] / b[1] for a, b in zip(runs[True], runs[False], strict=True)]
    return {
        "photos": len(files),
        "with": [x[0] for x in runs[True]], "without": [x[0] for x in runs[False]],
        "ratio": statistics.median(wall), "cpu_ratio": statistics.median(cpu),
        "per_photo": hook_cost(files[:300], backbone),
    }


@contextlib.contextmanager
def features_disabled() -> Iterator[None]:
    """The signals hook without the copies tier's features (indexer/features.py): the index-time
    cost those add is the difference. Decoding threads of this process see the patch."""
    import indexer.hashes as hashes

    saved = hashes.compute_features
    hashes.compute_features = lambda *a: None
    try:
        yield
    finally:
        hashes.compute_features = saved


def hook_cost(files: list[Path], backbone) -> dict:
    """CPU milliseconds per photo in this process, medians of 3 passes: read + decode + crop, the
    default engine on batches of 32, the signals hook without and with the features."""
    from indexer.engines import make_engine
    from indexer.hashes import compute_signals
    from indexer.imageio import load_image

    engine = make_engine(backbone, "auto")
    engine.prepare()

    def cpu_ms(work) -> float:
        passes = []
        for _ in range(3):
            t0 = time.process_time()
            work()
            passes.append(1000 * (time.process_time() - t0) / len(files))
        return statistics.median(passes)

    images = [load_image(f, min_side=backbone.preprocess.resize)[0] for f in files]
    crops = np.stack([backbone.preprocess.crop_array(img) for img in images]).transpose(0, 3, 1, 2)
    crops = np.ascontiguousarray(crops)
    decode_ms = cpu_ms(lambda: [backbone.preprocess.crop_array(load_image(f, min_side=backbone.preprocess.resize)[0])
                                for f in files])
    model_ms = cpu_ms(lambda: [engine.embed_uint8(crops[s : s + 32]) for s in range(0, len(crops), 32)])
    signals_ms = cpu_ms(lambda: [compute_signals(img) for img in images])
    with features_disabled():
        base_ms = cpu_ms(lambda: [compute_signals(img) for img in images])
    return {"engine": type(engine).__name__, "decode_ms": decode_ms, "model_ms": model_ms,
            "base_ms": base_ms, "signals_ms": signals_ms}


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        SECTION,
        "",
        f"Written by `python -m bench.duplicates` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"({r['seconds'] / 60:.0f} min). CPU: {m['cpu']}, {m['cores']} cores, flags {m['cpu flags']}; "
        f"load average at start {m['load average at start']}.",
    ]
    if "copies" in r:
        lines += copies_markdown(r)
    if "hard" in r:
        lines += hard_markdown(r["hard"])
    return more_markdown(r, lines)


def hard_markdown(h: dict) -> list[str]:
    lines = [
        "",
        f"### Hard edits of clothing_small photos among hard negatives ({h['files']} files)",
        "",
        f"Other originals than the set above, each with {len(HARD_TRANSFORMS)} hard edits "
        f"({', '.join(HARD_TRANSFORMS)}; bench/hard_copies.py), and the same number of other photos per "
        "class. Indexing took "
        f"{h['index_seconds']:.0f} s; the copies tier {h['duplicates_seconds']:.1f} s "
        f"({h['duplicates_seconds'] / h['index_seconds']:.2f} x indexing).",
        "",
    ]
    lines.append(table({k: Score(**v) for k, v in h["copies"].items()}, list(HARD_TRANSFORMS)))
    return lines


def copies_markdown(r: dict) -> list[str]:
    lines = [
        "",
        f"### Edited copies of clothing_small photos among hard negatives ({r['files']} files)",
        "",
        f"{r['per_class']} originals per class, each with {len(TRANSFORMS)} edited copies "
        f"({', '.join(TRANSFORMS)}), and {r['negatives']} other photos per class (the same kind of "
        "garment, shot alike). Pairs of one group found, all groups joined as connected components; "
        "per transform, the share of copies in their original's component.",
        "",
    ]
    scores = {k: Score(**v) for k, v in r["copies"].items()}
    lines.append(table(scores, list(TRANSFORMS)))
    if "duplicates_seconds" in r:
        lines.append(f"Indexing took {r['index_seconds']:.0f} s; the copies tier {r['duplicates_seconds']:.1f} s "
                     f"({r['duplicates_seconds'] / r['index_seconds']:.2f} x indexing).\n")
    lines.append(
        f"Candidates: {r['candidate_pairs']} pairs ({r['candidate_seconds']:.1f} s), of which "
        f"{r['verified_pairs']} went to ORB + RANSAC verification."
    )
    return lines


def more_markdown(r: dict, lines: list[str]) -> str:
    if "neardup" in r:
        lines += ["", "### shared/corpora/neardup (32 images, flips, rotations, EXIF orientations)", ""]
        lines.append(table({k: Score(**v) for k, v in r["neardup"].items()}, []))
    if "clothing" in r:
        c = r["clothing"]
        lines += ["", f"### All of clothing_small ({c['photos']} photos)", ""]
        lines.append(
            f"Copies tier: {len(c['copies_pairs'])} pairs, {len(c['not_listed'])} of them not the corpus's "
            f"one listed duplicate (`near_duplicate_pairs_found.csv`); {c['candidate_pairs']} candidate "
            f"pairs, {c['verified_pairs']} verified, {c['seconds']:.1f} s in all. The old cosine 0.95 "
            f"reports {c['old_pairs']} pairs."
        )
        for a, b in c["copies_pairs"]:
            lines.append(f"- `{a}` ~ `{b}`")
    if "speed" in r:
        s = r["speed"]
        lines += [
            "",
            "### Indexing speed",
            "",
            f"`lookalike index` of {s['photos']} clothing photos, runs interleaved: with the copies tier's "
            f"index-time features {statistics.median(s['with']):.1f} img/s "
            f"(runs {', '.join(f'{x:.1f}' for x in s['with'])}), without them "
            f"{statistics.median(s['without']):.1f} img/s (runs {', '.join(f'{x:.1f}' for x in s['without'])}): "
            f"ratio **{s['ratio']:.2f}** by wall clock"
            + (f", **{s['cpu_ratio']:.2f}** by CPU time" if "cpu_ratio" in s else "")
            + " (goal >= 0.90).",
        ]
        if "per_photo" in s:
            p = s["per_photo"]
            total = p["decode_ms"] + p["model_ms"] + p.get("base_ms", 0.0)
            lines.append(
                f"CPU time per photo in one process ({p.get('engine', 'torch')}): read + decode + crop "
                f"{p['decode_ms']:.2f} ms, model {p['model_ms']:.2f} ms, signals hook "
                + (f"{p['base_ms']:.2f} ms without the features, " if "base_ms" in p else "")
                + f"{p['signals_ms']:.2f} ms with them "
                f"(+{100 * (p['signals_ms'] - p.get('base_ms', 0.0)) / total:.1f} %)."
            )
    if "scale" in r:
        s = r["scale"]
        lines += [
            "",
            f"### `duplicates` on {s['n']:,} photos (synthetic signals)",
            "",
            f"Random unit vectors and random PDQ hashes with {s['planted']} planted copy pairs "
            f"(found: {s['found']}): `find_tiers` (both tiers, verification on) takes **{s['seconds']:.1f} s** "
            f"(runs {', '.join(f'{x:.1f}' for x in s['runs'])}; goal <= 30 s). Building the library took "
            f"{s['build_seconds']:.0f} s.",
        ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace (or append) the "## Near-duplicates" section of BENCHMARKS.md."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


if __name__ == "__main__":
    sys.exit(main())
