"""Benchmarks: `python -m bench` (indexing, re-scan, search; writes BENCHMARKS.md) and
`python -m bench.index_types` (latency, recall and memory of each FAISS index type)."""
