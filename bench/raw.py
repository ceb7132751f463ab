"""Decoding a 24 MP camera RAW for indexing: the embedded preview against a half-size demosaic, with
a JPEG of the same photo (Pillow's reduced-scale decode) as the baseline measured in the same run.

    python -m bench.raw [--reps 3]

The RAWs are DNGs written by pidng (the test extra) from a sample photo scaled to 6000 x 4000.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.machine import cpu_flags
from indexer.imageio import load_image
from tests.raw_photos import write_dng

SAMPLE = Path(__file__).resolve().parents[1] / "lookalike" / "samples"
SIZE = (6000, 4000)
MODEL_SIDE = 224  # what indexing asks load_image for (the backbone's resize)


def timed(path: Path, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        load_image(path, min_side=MODEL_SIDE)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    photo = Image.open(sorted(SAMPLE.rglob("*.jpg"))[0]).convert("RGB").rotate(90, expand=True).resize(SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photo.save(folder / "camera.jpg", quality=92)
        cases = {
            "JPEG 6000x4000 (baseline)": folder / "camera.jpg",
            "DNG, full-size preview": write_dng(folder / "full.dng", photo, preview=photo),
            "DNG, 1616x1080 preview": write_dng(folder / "sony.dng", photo, preview=photo.resize((1616, 1077))),
            "DNG, 160 px thumbnail only: half-size demosaic": write_dng(
                folder / "demosaic.dng", photo, preview=photo.resize((160, 107))),
        }
        print(f"decode for indexing (min_side {MODEL_SIDE}), median of {args.reps}; CPU flags: {cpu_flags()}")
        base = None
        for name, path in cases.items():
            seconds = timed(path, args.reps)
            base = base or seconds
            size = path.stat().st_size / 2**20
            print(f"  {name:<48} {seconds * 1000:8.0f} ms  {seconds / base:5.1f}x the JPEG  ({size:.0f} MiB file)")


if __name__ == "__main__":
    main()
