"""`lookalike`: the command line. Each command parses, builds Settings, calls one library function."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.version_option(package_name="lookalike")
def main(verbose: bool) -> None:
    """lookalike: find similar photos and label them by their nearest neighbours."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
    ]):
        f = option(f)
    return f


def run_index(settings: Settings, photos: Path, *, reembed: bool = False, progress: bool = True):
    from indexer.backbone import Backbone, BackboneError
    from indexer.library import LibraryError
    from indexer.pipeline import index_folder

    try:
        with open_library(settings, create=True) as library:
            backbone = Backbone(settings.backbone, weights=settings.weights, device=settings.device,
                                precision=settings.precision)
            return index_folder(photos, library, backbone, batch_size=settings.batch_size,
                                workers=settings.workers, reembed=reembed, progress=progress)
    except (LibraryError, BackboneError) as e:
        raise click.ClickException(str(e)) from None


@main.command()
@click.argument("photos", type=click.Path(exists=True, file_okay=False, path_type=Path))
@library_option
@backbone_options
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Images per batch [32].")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Worker processes [cores, at most 8]; on a CPU each decodes and embeds its own batches; 0 does all in this process.")
@click.option("--reembed", is_flag=True, help="Re-embed every photo (after changing the backbone).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def index(photos, library, backbone, weights, device, precision, batch_size, workers, reembed, quiet):
    """Index the photos under PHOTOS (incremental: re-runs only embed what changed)."""
    settings = settings_from(library=library, backbone=backbone, weights=weights, device=device,
                             precision=precision, batch_size=batch_size, workers=workers)
    report = run_index(settings, photos, reembed=reembed, progress=not quiet)
    click.echo(f"{report.summary()} ({report.images_per_second:.1f} img/s) -> {settings.library}")


@main.command()
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(library, as_json):
    """Counts, backbone and index of a library."""
    settings = settings_from(library=library)
    with open_library(settings) as lib:
        facts = library_status(lib)
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
    else:
        for key, value in facts.items():
            click.echo(f"{key:>16}: {value}")


def library_status(lib) -> dict:
    from collections import Counter

    from sqlalchemy import select

    from indexer.schema import FAILED, Image

    meta = lib.meta()
    counts = lib.counts()
    with lib.Session() as s:
        errors = s.scalars(select(Image.error).where(Image.status == FAILED)).all()
    vectors = lib.load_vectors()
    facts = {
        "library": str(lib.path),
        "root": meta.get("root"),
        **counts,
        "vectors": vectors.ntotal,
        "failed_by_reason": dict(Counter(e.split(":", 1)[0] for e in errors if e).most_common()),
        "backbone": meta.get("backbone"),
        "weights": meta.get("weights"),
        "preprocessing": meta.get("preprocessing"),
        "dim": int(meta["dim"]) if meta.get("dim") else None,
        "schema_version": int(meta["schema_version"]),
    }
    for key in ("index_type", "index_size", "index_recall_at_10", "index_memory_bytes"):
        if key in meta:
            facts[key] = json.loads(meta[key]) if meta[key][:1] in "0123456789[{" else meta[key]
    return facts


@main.command()
def backbones():
    """The backbones lookalike knows."""
    from indexer.backbone import list_backbones

    for name, about in list_backbones().items():
        click.echo(f"{name:20} {about}")


# Commands of the other layers register themselves here.
from lookalike import cli_search, cli_web  # noqa: E402,F401

if __name__ == "__main__":
    main()
