"""Stage 3, embed: a decoded batch becomes unit vectors, one per photo that decoded."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from indexer.decode import Decoded, DecodedBatch
from indexer.engines import Engine


@dataclass(frozen=True)
class EmbeddedBatch:
    """A batch ready to write. Rows of `vectors` follow the items without error, in order."""

    items: tuple[Decoded, ...]
    vectors: npt.NDArray[np.float32]  # [n_good, D], unit length
    decode_seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def good(self) -> list[Decoded]:
        return [it for it in self.items if it.error is None]

    @property
    def bad(self) -> list[Decoded]:
        return [it for it in self.items if it.error is not None]


def embed_batch(engine: Engine, batch: DecodedBatch, dim: int) -> EmbeddedBatch:
    """Run the model (on `engine`, indexer/engines.py) on a decoded batch; nothing runs when no photo
    decoded. `dim` is the backbone's vector size."""
    started = time.perf_counter()
    if batch.pixels is None:
        vectors = np.zeros((0, dim), np.float32)
    else:
        vectors = engine.embed_uint8(batch.pixels)
    return EmbeddedBatch(batch.items, vectors, batch.seconds, time.perf_counter() - started)
