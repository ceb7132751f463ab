"""Search latency, recall@10 and memory of each index type lookalike ships, at 10k, 100k and 1M vectors.

    python -m bench.index_types [--sizes 10000,100000,1000000] [--queries 200] [--hnsw-max 1000000]

Vectors are synthetic 1280-d unit vectors shaped like real embeddings: a 64-d Gaussian mixture
(1000 clusters) mapped to 1280-d, plus isotropic noise and a shared offset, tuned so that on 20k
vectors the nearest neighbour's cosine (0.72), the 10th's (0.67) and a random pair's (0.34) match
EfficientNet-Lite0 features of clothing_small. (Uniform random unit vectors have no neighbour
structure: every approximate index looks hopeless on them, and no photo collection looks like that.)

Queries are held out (not in the index). Latency is one query at a time on one thread (k=10), as a web request asks;
recall@10 is against exact search. Each approximate index is built by VectorIndex.build, which
raises efSearch / nprobe until recall@10 on vectors held out while building reaches 0.95. Memory is computed from
the index's codes, links, ids and centroids.
"""

from __future__ import annotations

import argparse
import platform
import time

import faiss
import numpy as np

from indexer.vectors import HNSW, INDEX_TYPES, VectorIndex, plan_index, recall_at

DIM = 1280


def synthetic(
    n: int, seed: int, *, dim: int = DIM, latent: int = 64, clusters: int = 1000
) -> np.ndarray:
    """n unit vectors [n, dim] from the model described in the module docstring; deterministic."""
    rng = np.random.default_rng(12345)  # the same "embedding space" for every call
    basis = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):  # bounded temporaries at 1M
        m = min(50_000, n - start)
        z = centres[rng.integers(0, clusters, m)] + 0.8 * rng.standard_normal(
            (m, latent), dtype=np.float32
        )
        x = z @ basis + 0.6 * rng.standard_normal((m, dim), dtype=np.float32) + 1.0
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def latencies_ms(index: VectorIndex, queries: np.ndarray) -> np.ndarray:
    """One query at a time on one thread: a web request's view (OpenMP's thread team only adds
    wake-up jitter to a single query, worst when the cores are shared)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.search(queries[:1], 10)  # warm up
        times = []
        for q in queries:
            t0 = time.perf_counter()
            index.search(q[None, :], 10)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        faiss.omp_set_num_threads(threads)
    return np.array(times)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--types", default=",".join(INDEX_TYPES))
    parser.add_argument("--queries", type=int, default=200, help="held-out queries (halved at 1M)")
    parser.add_argument(
        "--hnsw-max",
        type=int,
        default=1_000_000,
        help="skip HNSW builds above this size (an estimate of the build time is printed instead)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.types.split(",")

    print(
        f"# index types: {DIM}-d synthetic unit vectors, k=10, faiss {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} threads, {platform.processor() or platform.machine()}"
    )
    header = (
        f"{'n':>9} {'type':<8} {'params':<30} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'recall@10':>9} {'memory':>10} {'auto?':>5}"
    )
    print(header)
    print("-" * len(header))
    notes = []
    hnsw_rate = None  # vectors per second, to estimate skipped builds
    for n in sizes:
        t0 = time.perf_counter()
        base = synthetic(n, seed=n)
        nq = args.queries if n < 1_000_000 else max(20, args.queries // 2)
        queries = synthetic(nq, seed=7)
        _, exact = faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)
        ids = np.arange(n, dtype=np.int64)
        chosen = plan_index(n, DIM).kind
        notes.append(
            f"n={n}: data + exact ground truth in {time.perf_counter() - t0:.0f}s; "
            f"default 4 GiB budget picks {plan_index(n, DIM).key()}"
        )
        for kind in kinds:
            if kind == HNSW and n > args.hnsw_max:
                estimate = (
                    f" (~{n / hnsw_rate / 60:.0f} min at the rate measured below it)"
                    if hnsw_rate
                    else ""
                )
                print(f"{n:>9} {kind:<8} {'skipped: build too slow here' + estimate}")
                continue
            started = time.perf_counter()
            index = VectorIndex.build(DIM, ids, base, kind=kind)
            build_s = time.perf_counter() - started
            if kind == HNSW:
                hnsw_rate = n / build_s
            lat = latencies_ms(index, queries)
            _, found = index.search(queries, 10)
            recall = recall_at(exact, found)
            print(
                f"{n:>9} {kind:<8} {index.params():<30} {build_s:>8.1f} {np.percentile(lat, 50):>8.2f} "
                f"{np.percentile(lat, 99):>8.2f} {recall:>9.3f} {human_bytes(index.memory_bytes()):>10} "
                f"{'yes' if kind == chosen else '':>5}",
                flush=True,
            )
            del index
        del base
    print()
    for note in notes:
        print("#", note)
    print(
        "# build s includes training and tuning efSearch / nprobe to recall@10 >= 0.95 on 300 "
        "vectors held out while building; recall@10 above is on other, new queries. PQ stops "
        "short of 0.95 where wider search gains nothing: its codes limit recall."
    )


if __name__ == "__main__":
    main()
