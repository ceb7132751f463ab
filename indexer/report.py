"""What one indexing run did: counts by outcome, failures by reason, and where the time went."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class IndexReport:
    """What one run did. `failed` counts this run's new failures by reason."""

    indexed: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    not_removed: int = 0  # missing from the scan but kept for a later run (indexer.plan: the scan may have missed them)
    changing: int = 0  # files read while they were being written (size or mtime moved since the scan): left pending
    failed: Counter = field(default_factory=Counter)
    unreadable_dirs: list[str] = field(default_factory=list)
    ignored: int = 0  # files skipped by extension (not image formats)
    bad_names: list[str] = field(default_factory=list)  # image files skipped: their path is not UTF-8
    seconds: float = 0.0
    embed_seconds: float = 0.0  # model time, summed over the processes that ran it
    decode_seconds: float = 0.0  # read + hash + decode + crop, summed over workers
    engine: str = ""  # which engine and precision embedded, e.g. "openvino fp32"
    write_seconds: float = 0.0  # SQLite rows + FAISS adds, in the driver
    first_written_seconds: float | None = None  # from the run's start to its first batch committed
    started: float = 0.0  # time.perf_counter() at the run's start: the first write from a process's start
    signals_backfilled: int = 0  # duplicate signals computed for photos indexed before they existed

    @property
    def images_per_second(self) -> float:
        done = self.indexed + sum(self.failed.values())
        return done / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        failed = sum(self.failed.values())
        reasons = ", ".join(f"{n} {r}" for r, n in self.failed.most_common())
        line = (
            f"indexed {self.indexed}, unchanged {self.unchanged}, moved {self.moved}, "
            f"removed {self.removed}, failed {failed}" + (f" ({reasons})" if reasons else "")
        )
        if self.not_removed:
            line += f", {self.not_removed} missing photos kept for a later run"
        if self.changing:
            line += f", {self.changing} photos changing while read left for a later run"
        if self.ignored:
            line += f", ignored {self.ignored} non-image files"
        if self.bad_names:
            line += f", skipped {len(self.bad_names)} files whose names are not UTF-8"
        if self.unreadable_dirs:
            line += f", unreadable folders {len(self.unreadable_dirs)}"
        if self.signals_backfilled:
            line += f", duplicate signals for {self.signals_backfilled} older photos"
        return line + f" in {self.seconds:.1f}s"
