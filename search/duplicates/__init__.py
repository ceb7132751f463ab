"""Copies and similar shots: candidate pairs from hashes and neighbour lists, their verification
by local features, and the review that decides which copy to keep."""

__all__ = ["candidates", "review", "verify"]
