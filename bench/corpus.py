"""Where the benchmarks find their photos: ../shared/corpora beside the checkout (its README says
what each corpus holds)."""

from __future__ import annotations

from pathlib import Path

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
CLOTHING_SMALL = CORPORA / "clothing_small"  # 3,781 labelled photos, 10 classes, class-per-folder
