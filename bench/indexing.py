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

from bench import commands
from indexer.allocator import keep_freed_memory
from indexer.backbone import BACKBONES, Backbone
from indexer.engines import Engine, make_engine, openvino_available
from indexer.library import Library
from indexer.pipeline import default_workers, index_folder
from indexer.runners.local import _worker_init

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
    photos: Path, backbone: Backbone, batch_size: int, workers: int | None, keep: Path | None = None,
    engine: str = "auto", embed_in_workers: bool | None = None,
) -> dict:
    """Index `photos` into a fresh library (kept at `keep` if given); rate and decode/model split."""
    with tempfile.TemporaryDirectory(prefix="bench-lib-") as tmp:
        path = keep or Path(tmp) / "library"
        if path.exists():
            shutil.rmtree(path)
        library = Library(path, create=True)
        try:
            cpu, started = cpu_seconds(), time.perf_counter()
            report = index_folder(photos, library, backbone, batch_size=batch_size, workers=workers,
                                  engine=engine, embed_in_workers=embed_in_workers)
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
        "engine": report.engine,
        "write_ms": 1e3 * report.write_seconds / max(n, 1),
        "first_written": report.first_written_seconds,
    }


# -- the model alone, on ready tensors --------------------------------------------------------------


def _ready_batch(backbone: Backbone, batch_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = backbone.preprocess.crop
    return torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=g)


def model_in_process(engine: Engine, batch_size: int, batches: int) -> tuple[float, float]:
    """One process: torch's default threads, or OpenVINO's streams (one per core); (wall, CPU) rates."""
    x = _ready_batch(engine.backbone, batch_size)  # type: ignore[attr-defined]
    engine.embed_uint8(x)  # warm up
    cpu, started = cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        engine.embed_uint8(x)
    n = batches * batch_size
    return n / (time.perf_counter() - started), n / (cpu_seconds() - cpu)


class _ReadyBatches(Dataset):
    def __init__(self, engine: Engine, batch_size: int, batches: int) -> None:
        self.engine = engine
        self.x = _ready_batch(engine.backbone, batch_size)  # type: ignore[attr-defined]
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.engine.embed_uint8(self.x))


def model_data_parallel(engine: Engine, batch_size: int, batches: int, workers: int) -> float:
    """`workers` processes of one thread each, as the pipeline runs the model on a CPU (wall clock;
    its CPU time per image is that of `model_in_process` with one thread). `engine` is built with
    one thread and compiles in each worker."""
    engine.prepare()
    loader = DataLoader(
        _ReadyBatches(engine, batch_size, batches + workers),
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
    cli_images: int
    engines: list[str] = field(default_factory=list)  # the engines measured, the default's first
    default_engine: str = ""  # what the default run said it ran, e.g. "openvino fp32"
    clothing: Runs = field(default_factory=Runs)  # default engine and layout
    large: Runs = field(default_factory=Runs)
    # Per engine: end to end, model only in one process (all threads / streams) and in one-thread
    # processes, and images per CPU-second with one thread.
    end_to_end: dict[str, Runs] = field(default_factory=dict)
    model_threads: dict[str, Runs] = field(default_factory=dict)
    model_processes: dict[str, Runs] = field(default_factory=dict)
    model_cpu_rate: dict[str, Runs] = field(default_factory=dict)
    main_process_layout: Runs = field(default_factory=Runs)  # default engine in this process, workers decode
    process_layout: Runs = field(default_factory=Runs)  # each worker process decodes and embeds (the old default)
    stages: dict = field(default_factory=dict)  # bench.stages.profile: CPU ms per photo by stage
    startup: dict = field(default_factory=dict)  # bench.stages.startup: fresh-interpreter seconds
    naive: Runs = field(default_factory=Runs)
    # Ratios of figures measured side by side in the same repetition; their medians are reported.
    vs_model: Runs = field(default_factory=Runs)
    vs_naive: Runs = field(default_factory=Runs)
    large_vs_clothing: Runs = field(default_factory=Runs)
    # Whole commands in fresh processes (wall clock with start-up).
    cli_index: Runs = field(default_factory=Runs)
    naive_script: Runs = field(default_factory=Runs)
    cli_vs_naive_wall: Runs = field(default_factory=Runs)
    first_photo: Runs = field(default_factory=Runs)
    command_walls: dict[str, float] = field(default_factory=dict)
    allocator: dict[str, dict[str, float]] = field(default_factory=dict)
    large_bytes: float = 0.0
    photos: Path | None = None  # the clothing folder indexed
    library: Path | None = None  # its library, kept for the re-scan

    def bound(self, engine: str) -> float:
        return max(self.model_threads[engine].value, self.model_processes[engine].value)

    @property
    def best_engine(self) -> str:
        return max(self.engines, key=self.bound)

    @property
    def model_bound(self) -> float:
        return self.bound(self.best_engine)


def run(
    corpus: Path,
    workdir: Path,
    *,
    quick: bool,
    reps: int,
    batch_size: int = 32,
    workers: int | None = None,
    cli_photos: int = 600,
    say=print,
) -> IndexingResults:
    keep_freed_memory()  # as `lookalike index` does: the in-process model figures get it too
    backbone = Backbone(device="auto")
    backbone.model  # noqa: B018 (loads the weights)
    cpu = backbone.device_type == "cpu"
    engines = ["openvino", "torch"] if cpu and openvino_available() else ["torch"]
    for name in engines:
        make_engine(backbone, name).prepare()  # conversion, if any, is not timed
    workers = default_workers(backbone.device_type) if workers is None else workers
    files = photo_files(corpus, 600 if quick else None)
    photos = corpus if not quick else copy_tree(files, corpus, workdir / "clothing")
    cli_files = files[:cli_photos]
    cli_dir = copy_tree(cli_files, corpus, workdir / f"clothing-{len(cli_files)}")
    large_dir = workdir / "large"
    say(f"making 100 large JPEGs (~12 MP, quality 90) in {large_dir} ...")
    started = time.perf_counter()
    make_large_jpegs(files[:100], large_dir)
    large_bytes = sum(p.stat().st_size for p in large_dir.iterdir()) / 100
    say(f"  done in {time.perf_counter() - started:.0f}s, {large_bytes / 1e6:.2f} MB each")
    naive_files = files[: (4 if quick else 8) * batch_size]
    res = IndexingResults(batch_size, workers, len(files), 100, len(naive_files), len(cli_files), engines=engines,
                          large_bytes=large_bytes, photos=photos, library=workdir / "clothing-library")
    for name in engines:
        for table in (res.end_to_end, res.model_threads, res.model_processes, res.model_cpu_rate):
            table[name] = Runs()
    batches = 8 if quick else 16
    data_parallel = cpu and workers > 0
    threads = torch.get_num_threads()
    for rep in range(reps):
        measured: dict[str, tuple[float, list[float]]] = {}
        for name in engines:
            # The model alone right before and right after the pipeline: the bound for this repetition.
            rate, _ = model_in_process(make_engine(backbone, name), batch_size, batches // 2)
            res.model_threads[name].values.append(rate)
            procs = []
            if data_parallel:
                procs.append(model_data_parallel(make_engine(backbone, name, threads=1), batch_size, batches,
                                                 workers))
            if cpu:
                torch.set_num_threads(1)
                try:
                    one = make_engine(backbone, name, threads=1)
                    res.model_cpu_rate[name].values.append(model_in_process(one, batch_size, 4)[1])
                finally:
                    torch.set_num_threads(threads)
            measured[name] = (rate, procs)
        c = index_once(photos, backbone, batch_size, workers, keep=workdir / "clothing-library")
        res.default_engine = c["engine"]
        res.clothing.values.append(c["rate"])
        res.clothing.notes.append(c)
        for name in engines:
            e = c if c["engine"].split()[0] == name else index_once(photos, backbone, batch_size, workers,
                                                                     engine=name)
            res.end_to_end[name].values.append(e["rate"])
            res.end_to_end[name].notes.append(e)
        if data_parallel:
            m = index_once(photos, backbone, batch_size, workers, embed_in_workers=False)
            res.main_process_layout.values.append(m["rate"])
            res.main_process_layout.notes.append(m)
            p = index_once(photos, backbone, batch_size, workers, embed_in_workers=True)
            res.process_layout.values.append(p["rate"])
            res.process_layout.notes.append(p)
        lg = index_once(large_dir, backbone, batch_size, workers)
        res.large.values.append(lg["rate"])
        res.large.notes.append(lg)
        bounds = {}
        for name in engines:
            rate, procs = measured[name]
            if data_parallel:
                procs.append(model_data_parallel(make_engine(backbone, name, threads=1), batch_size, batches,
                                                 workers))
                res.model_processes[name].values.append(statistics.mean(procs))
            bounds[name] = max(rate, statistics.mean(procs) if procs else 0)
        naive = naive_baseline(naive_files, backbone.name, batch_size)
        res.naive.values.append(naive)
        res.vs_model.values.append(c["rate"] / max(bounds.values()))
        res.vs_naive.values.append(c["rate"] / naive)
        res.large_vs_clothing.values.append(lg["rate"] / c["rate"])
        cli, script = commands.index_wall(cli_dir), commands.naive_wall(cli_dir)
        res.cli_index.values.append(cli)
        res.naive_script.values.append(script)
        res.cli_vs_naive_wall.values.append(script / cli)
        res.first_photo.values.append(commands.first_photo_wall(files[0]))
        say(
            f"  rep {rep + 1}/{reps}: clothing {c['rate']:.1f} img/s ({c['engine']}), "
            + ", ".join(f"{n} end to end {res.end_to_end[n].values[-1]:.1f} / model {bounds[n]:.1f}"
                        for n in engines)
            + f", main-process layout {res.main_process_layout.values[-1] if data_parallel else 0:.1f}"
            + f", process layout {res.process_layout.values[-1] if data_parallel else 0:.1f}"
            + f", large {lg['rate']:.1f}, naive {naive:.1f}; lookalike index {cli:.1f}s vs naive script "
            f"{script:.1f}s; first photo {res.first_photo.values[-1]:.1f}s"
        )
    from bench import stages

    say("stages, one at a time, CPU time per photo ...")
    res.stages = stages.profile(files[:600], batch_size)
    res.startup = stages.startup(reps)
    say("  " + ", ".join(f"{k} {v:.2f} ms" for k, v in res.stages.items() if isinstance(v, float))
        + "; start-up " + ", ".join(f"{k} {v}" for k, v in res.startup.items()))
    say("commands that do not embed ...")
    res.command_walls = commands.command_walls(workdir / "clothing-library", reps)
    say("  " + ", ".join(f"{k} {v:.2f}s" for k, v in res.command_walls.items()))
    if cpu:
        say("allocator: PyTorch model only with glibc's defaults, then with freed memory kept ...")
        res.allocator = commands.allocator_probe()
        say("  " + ", ".join(f"{k}: user {v['user']:.2f}s system {v['system']:.2f}s" for k, v in res.allocator.items()))
    return res
