"""Labelled photos decoded once into memory at a modest size, and the views training takes of them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from indexer.cancel import check
from indexer.imageio import ImageError, load_image

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_ASPECT = 2.0  # a panorama keeps its middle, at most this many times as long as it is wide


@dataclass
class PhotoSet:
    """uint8 tensors [3, H, W] with the shorter side `side` (the backbone's resize), and their class codes.

    Memory: about side^2 x 4 bytes a photo (256 px: 0.26 MB, so 2,000 photos take 0.5 GB).
    """

    side: int
    pixels: list[torch.Tensor] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason) that did not decode

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def code_array(self) -> npt.NDArray[np.int64]:
        return np.asarray(self.codes, dtype=np.int64)

    def subset(self, rows: Sequence[int]) -> PhotoSet:
        return PhotoSet(self.side, [self.pixels[i] for i in rows], [self.codes[i] for i in rows],
                        [self.paths[i] for i in rows])

    def joined(self, other: PhotoSet) -> PhotoSet:
        """This set's photos, then `other`'s (the skipped files: this set's)."""
        return PhotoSet(self.side, self.pixels + other.pixels, self.codes + other.codes, self.paths + other.paths,
                        list(self.skipped))


def decode_for_training(path: Path, side: int) -> torch.Tensor:
    """A photo file as uint8 [3, H, W], shorter side `side` (bicubic, as Preprocess.crop_uint8 resizes),
    the longer side cut to MAX_ASPECT x side around the middle. Raises ImageError or OSError."""
    from torchvision.transforms import v2 as T
    from torchvision.transforms.v2 import functional as F

    img, _ = load_image(Path(path), min_side=side)
    x = F.pil_to_tensor(img)
    x = F.resize(x, [side], interpolation=T.InterpolationMode.BICUBIC, antialias=True)
    h, w = x.shape[1:]
    longest = int(MAX_ASPECT * side)
    if max(h, w) > longest:
        x = F.center_crop(x, [min(h, longest), min(w, longest)])
    return x.contiguous()


def load_photos(
    items: Sequence[tuple[Path, int]],
    side: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> PhotoSet:
    """Decode (path, class code) pairs; files that do not decode are skipped and listed in `skipped`."""
    out = PhotoSet(side)
    for n, (path, code) in enumerate(items):
        check(cancel)
        try:
            out.pixels.append(decode_for_training(Path(path), side))
        except (ImageError, OSError) as e:
            log.info("skipping %s for fine-tuning: %s", path, e)
            out.skipped.append((Path(path), str(e)))
        else:
            out.codes.append(int(code))
            out.paths.append(Path(path))
        if progress:
            progress(n + 1, len(items))
    return out


class Augment:
    """A random view of a photo as training sees it: a random resized crop at the backbone's input
    size, a horizontal flip, a light colour jitter. Draws from torch's global generator (seeded)."""

    def __init__(self, crop: int, min_scale: float) -> None:
        from torchvision.transforms import v2 as T

        self.transform = T.Compose([
            T.RandomResizedCrop(crop, scale=(min_scale, 1.0), interpolation=T.InterpolationMode.BILINEAR,
                                antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        ])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.transform(pixels)


def centre_view(pixels: torch.Tensor, crop: int) -> torch.Tensor:
    """The view the library embeds (Preprocess: shorter side already resized, centre crop)."""
    from torchvision.transforms.v2 import functional as F

    return F.center_crop(pixels, [crop])


def stratified_split(
    codes: npt.NDArray[np.int64], fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(train rows, held-out rows): about `fraction` of each class held out, at least one of every
    class with two photos or more, never a class's last photo."""
    train: list[int] = []
    held: list[int] = []
    for c in np.unique(codes):
        rows = rng.permutation(np.flatnonzero(codes == c))
        k = 0 if len(rows) < 2 else min(len(rows) - 1, max(1, round(fraction * len(rows))))
        held += rows[:k].tolist()
        train += rows[k:].tolist()
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(held, np.int64))
