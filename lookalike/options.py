"""Options and helpers every command module shares (a leaf: it imports no command module)."""

from __future__ import annotations

from pathlib import Path

import click

from indexer.engines import ENGINES
from indexer.settings import Settings

SAMPLES = Path(__file__).parent / "samples"


def library_option(f):
    return click.option(
        "--library", type=click.Path(file_okay=False, path_type=Path), envvar="LOOKALIKE_LIBRARY",
        default=None, help="Library folder [env LOOKALIKE_LIBRARY; default ./lookalike-library].",
    )(f)


def settings_from(**options) -> Settings:
    return Settings.from_env(**options)


def open_library(settings: Settings, *, create: bool = False):
    from indexer.library import Library, LibraryError

    try:
        return Library(settings.library, create=create)
    except LibraryError as e:
        raise click.ClickException(str(e)) from None


def backbone_options(f):
    for option in reversed([
        click.option("--backbone", default=None, envvar="LOOKALIKE_BACKBONE",
                     help="Backbone name (see `lookalike backbones`) [default efficientnet_lite0]."),
        click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     envvar="LOOKALIKE_WEIGHTS", help="Weights file for the backbone (offline use)."),
        click.option("--device", default=None, envvar="LOOKALIKE_DEVICE",
                     help="auto, cpu, cuda, cuda:N or mps [default auto]."),
        click.option("--precision", default=None, envvar="LOOKALIKE_PRECISION",
                     type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     help="auto: bf16 on GPUs and on CPUs with native bf16, else fp32."),
        click.option("--engine", default=None, envvar="LOOKALIKE_ENGINE", type=click.Choice(ENGINES),
                     help="auto: OpenVINO on a CPU when installed, else PyTorch [default auto]."),
    ]):
        f = option(f)
    return f


def run_index(settings: Settings, photos: Path, *, reembed: bool = False, progress: bool = True):
    from indexer.library import LibraryError

    with open_library(settings, create=True) as library:
        try:
            with library.writer_lock():  # busy? say so before importing torch and loading a model
                pass
        except LibraryError as e:
            raise click.ClickException(str(e)) from None
        from indexer.backbone import Backbone, BackboneError
        from indexer.engines import EngineError
        from indexer.pipeline import index_folder

        try:
            backbone = Backbone(settings.backbone, weights=settings.weights, device=settings.device,
                                precision=settings.precision)
            report = index_folder(photos, library, backbone, batch_size=settings.batch_size,
                                  workers=settings.workers, reembed=reembed, progress=progress,
                                  engine=settings.engine)
        except (LibraryError, BackboneError, EngineError) as e:
            raise click.ClickException(str(e)) from None
        if report.engine:
            with library.Session.begin() as s:
                library.set_meta(s, engine=report.engine)
        return report
