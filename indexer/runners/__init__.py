"""Runners join the decode and embed stages on an engine; the driver plans and writes (indexer.pipeline)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from indexer.backbone import Backbone
from indexer.decode import PhotoTask
from indexer.embed import EmbeddedBatch
from indexer.report import IndexReport

RUNNERS = ("local", "ray")


class Runner(Protocol):
    """Decode and embed `tasks` in batches of at most `batch_size`; yields batches as they finish."""

    def __call__(
        self, root: Path, tasks: Sequence[PhotoTask], backbone: Backbone, *, batch_size: int,
        workers: int | None, engine: str = "auto", embed_in_workers: bool | None = None,
        report: IndexReport | None = None,
    ) -> Iterator[EmbeddedBatch]: ...


def get_runner(name: str, *, ray_address: str | None = None) -> Runner:
    """The runner called `name` (one of RUNNERS). Raises ValueError for another name."""
    if name == "local":  # threads and one engine on a CPU; worker processes on a GPU or when asked
        from indexer.runners.threads import run_local

        return run_local
    if name == "ray":
        from indexer.runners.ray import RayRunner

        return RayRunner(address=ray_address)
    raise ValueError(f"unknown runner {name!r}: one of {', '.join(RUNNERS)}")


__all__ = ["RUNNERS", "Runner", "get_runner"]
