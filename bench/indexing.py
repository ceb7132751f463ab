"""Indexing throughput: the real pipeline end to end, the model alone, and a naive baseline.

Every figure is images per second of wall-clock time, the median of `reps` runs interleaved with
the others, so that a noisy machine slows all of them alike and the ratios stay meaningful.
"""

from __future__ import annotations

import logging
import resource
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from indexer.backbone import BACKBONES, Backbone
from indexer.library import Library
from indexer.pipeline import _worker_init, default_workers, index_folder

log = logging.getLogger(__name__)

LARGE_PIXELS = 12_000_000


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the pipeline's workers), user + system."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Runs:
    """Repeated measurements of one thing; `value` is their median."""

    values: list[float] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)

    @property
    def value(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def note(self, key: str) -> float:
        return statistics.median(n[key] for n in self.notes) if self.notes else float("nan")


def photo_files(corpus: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in corpus.rglob("*.jpg") if p.is_file())
    return files[:limit] if limit else files


def copy_tree(files: list[Path], corpus: Path, dst: Path) -> Path:
    for f in files:
        target = dst / f.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return dst


def _upscale(args: tuple[Path, Path]) -> None:
    src, dst = args
    img = Image.open(src).convert("RGB")
    scale = (LARGE_PIXELS / (img.width * img.height)) ** 0.5
    big = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    big.save(dst, "JPEG", quality=90)


def make_large_jpegs(files: list[Path], dst: Path, processes: int = 2) -> Path:
    """~12-megapixel JPEGs (quality 90) upscaled from real photos."""
    dst.mkdir(parents=True, exist_ok=True)
    jobs = [(f, dst / f"large_{i:04d}.jpg") for i, f in enumerate(files)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_upscale, jobs))
    return dst


def index_once(
    photos: Path, backbone: Backbone, batch_size: int, workers: int | None, keep: Path | None = None
) -> dict:
    """Index `photos` into a fresh library (kept at `keep` if given); rate and decode/model split."""
    with tempfile.TemporaryDirectory(prefix="bench-lib-") as tmp:
        path = keep or Path(tmp) / "library"
        if path.exists():
            shutil.rmtree(path)
        library = Library(path, create=True)
        try:
            cpu, started = cpu_seconds(), time.perf_counter()
            report = index_folder(photos, library, backbone, batch_size=batch_size, workers=workers)
            wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        finally:
            library.close()
    n = report.indexed
    return {
        "rate": n / wall,
        "cpu_rate": n / cpu,
        "images": n,
        "failed": sum(report.failed.values()),
        "seconds": wall,
        "decode_ms": 1e3 * report.decode_seconds / max(n, 1),
        "model_ms": 1e3 * report.embed_seconds / max(n, 1),
    }


# -- the model alone, on ready tensors --------------------------------------------------------------


def _ready_batch(backbone: Backbone, batch_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = backbone.preprocess.crop
    return torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=g)


def model_in_process(backbone: Backbone, batch_size: int, batches: int) -> float:
    """One process, torch's default threads (one per core)."""
    x = _ready_batch(backbone, batch_size)
    backbone.embed_uint8(x)  # warm up
    cpu, started = cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        backbone.embed_uint8(x)
    n = batches * batch_size
    return n / (time.perf_counter() - started), n / (cpu_seconds() - cpu)


class _ReadyBatches(Dataset):
    def __init__(self, backbone: Backbone, batch_size: int, batches: int) -> None:
        self.backbone = backbone
        self.x = _ready_batch(backbone, batch_size)
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.backbone.embed_uint8(self.x))


def model_data_parallel(backbone: Backbone, batch_size: int, batches: int, workers: int) -> float:
    """`workers` processes of one thread each, as the pipeline runs the model on a CPU (wall clock;
    its CPU time per image is that of `model_in_process` with one thread)."""
    loader = DataLoader(
        _ReadyBatches(backbone, batch_size, batches + workers),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_worker_init,
        prefetch_factor=1,
    )
    it = iter(loader)
    for _ in range(workers):  # warm-up: each worker's first batch
        next(it)
    started = time.perf_counter()
    n = sum(len(v) for v in it)
    wall = time.perf_counter() - started
    return n / wall


# -- what a user would write ------------------------------------------------------------------------


def naive_baseline(files: list[Path], backbone_name: str, batch_size: int) -> float:
    """Sequential full-size Pillow decode + torchvision transforms + the same model in fp32."""
    from torchvision import transforms as T

    spec = BACKBONES[backbone_name]
    model = spec.build(None).eval()
    pp = spec.preprocess
    transform = T.Compose(
        [
            T.Resize(pp.resize, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(pp.crop),
            T.ToTensor(),
            T.Normalize(pp.mean, pp.std),
        ]
    )
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(files), batch_size):
            batch = torch.stack(
                [transform(Image.open(f).convert("RGB")) for f in files[start : start + batch_size]]
            )
            if hasattr(model, "forward_head"):  # timm
                model.forward_head(model.forward_features(batch), pre_logits=True)
            else:
                model(batch)
    return len(files) / (time.perf_counter() - started)


@dataclass
class IndexingResults:
    batch_size: int
    workers: int
    clothing_images: int
    large_images: int
    naive_images: int
    clothing: Runs = field(default_factory=Runs)
    large: Runs = field(default_factory=Runs)
    model_threads: Runs = field(default_factory=Runs)  # one process, all threads
    model_processes: Runs = field(default_factory=Runs)  # one-thread processes
    model_cpu_rate: Runs = field(default_factory=Runs)  # images per CPU-second, one thread
    naive: Runs = field(default_factory=Runs)
    # Ratios of figures measured side by side in the same repetition; their medians are reported.
    vs_model: Runs = field(default_factory=Runs)
    vs_naive: Runs = field(default_factory=Runs)
    large_vs_clothing: Runs = field(default_factory=Runs)
    large_bytes: float = 0.0
    photos: Path | None = None  # the clothing folder indexed
    library: Path | None = None  # its library, kept for the re-scan

    @property
    def model_bound(self) -> float:
        return max(self.model_threads.value, self.model_processes.value)


def run(
    corpus: Path,
    workdir: Path,
    *,
    quick: bool,
    reps: int,
    batch_size: int = 32,
    workers: int | None = None,
    say=print,
) -> IndexingResults:
    backbone = Backbone(device="auto")
    backbone.model  # noqa: B018 (loads the weights)
    workers = default_workers(backbone.device.type) if workers is None else workers
    files = photo_files(corpus, 600 if quick else None)
    photos = corpus if not quick else copy_tree(files, corpus, workdir / "clothing")
    large_dir = workdir / "large"
    say(f"making 100 large JPEGs (~12 MP, quality 90) in {large_dir} ...")
    started = time.perf_counter()
    make_large_jpegs(files[:100], large_dir)
    large_bytes = sum(p.stat().st_size for p in large_dir.iterdir()) / 100
    say(f"  done in {time.perf_counter() - started:.0f}s, {large_bytes / 1e6:.2f} MB each")
    naive_files = files[: (4 if quick else 8) * batch_size]
    res = IndexingResults(batch_size, workers, len(files), 100, len(naive_files), large_bytes=large_bytes,
                          photos=photos, library=workdir / "clothing-library")
    batches = 8 if quick else 16
    data_parallel = backbone.device.type == "cpu" and workers > 0
    threads = torch.get_num_threads()
    for rep in range(reps):
        # The model alone right before and right after the pipeline: the bound for this repetition.
        bound = [model_data_parallel(backbone, batch_size, batches, workers)] if data_parallel else []
        rate, _ = model_in_process(backbone, batch_size, batches // 2)
        res.model_threads.values.append(rate)
        if backbone.device.type == "cpu":
            torch.set_num_threads(1)
            try:
                res.model_cpu_rate.values.append(model_in_process(backbone, batch_size, 4)[1])
            finally:
                torch.set_num_threads(threads)
        c = index_once(photos, backbone, batch_size, workers, keep=workdir / "clothing-library")
        res.clothing.values.append(c["rate"])
        res.clothing.notes.append(c)
        lg = index_once(large_dir, backbone, batch_size, workers)
        res.large.values.append(lg["rate"])
        res.large.notes.append(lg)
        if data_parallel:
            bound.append(model_data_parallel(backbone, batch_size, batches, workers))
            res.model_processes.values.append(statistics.mean(bound))
        naive = naive_baseline(naive_files, backbone.name, batch_size)
        res.naive.values.append(naive)
        res.vs_model.values.append(c["rate"] / max(rate, statistics.mean(bound) if bound else 0))
        res.vs_naive.values.append(c["rate"] / naive)
        res.large_vs_clothing.values.append(lg["rate"] / c["rate"])
        say(
            f"  rep {rep + 1}/{reps}: clothing {c['rate']:.1f} img/s, large {lg['rate']:.1f}, "
            f"model {rate:.1f} (1 process) / "
            f"{' -> '.join(f'{b:.1f}' for b in bound) or 'n/a'} ({workers} processes, before -> after), "
            f"naive {naive:.1f}"
        )
    return res
