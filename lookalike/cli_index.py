"""Commands that build and describe a library: index, status, backbones."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lookalike.options import (
    backbone_options,
    echo_json,
    library_option,
    memory_budget_option,
    open_library,
    run_index,
    setting_type,
    settings_from,
)


@click.command()
@click.argument("photos", type=click.Path(exists=True, file_okay=False, path_type=Path))
@library_option
@backbone_options
@click.option("--batch-size", type=setting_type("batch_size"), default=None, help="Images per batch [32].")
@click.option("--workers", type=setting_type("workers"), default=None,
              help="Decoders [cores, at most 8]: on a CPU threads feeding one engine; with a GPU worker "
                   "processes (0 does all in this process).")
@click.option("--reembed", is_flag=True, help="Re-embed every photo (after changing the backbone).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@memory_budget_option
@click.option("--runner", type=setting_type("runner"), default=None,
              help="Where decoding and embedding run: local worker processes, or Ray Data on a cluster "
                   "(pip install 'lookalike[ray]') [env LOOKALIKE_RUNNER; default local].")
@click.option("--ray-address", default=None,
              help="Ray cluster address for --runner ray, e.g. 10.0.0.1:6379 [default: start Ray here].")
def index(photos, library, backbone, weights, device, precision, engine, batch_size, workers, reembed, quiet,
          memory_budget, runner, ray_address):
    """Index the photos under PHOTOS (incremental: re-runs only embed what changed)."""
    settings = settings_from(library=library, backbone=backbone, weights=weights, device=device,
                             precision=precision, engine=engine, batch_size=batch_size, workers=workers,
                             memory_budget=memory_budget, runner=runner, ray_address=ray_address)
    report = run_index(settings, photos, reembed=reembed, progress=not quiet).report
    ran = f", {report.engine}" if report.engine else ""
    click.echo(f"{report.summary()} ({report.images_per_second:.1f} img/s{ran}) -> {settings.library}")


@click.command()
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(library, as_json):
    """Counts, backbone and index of a library."""
    settings = settings_from(library=library)
    with open_library(settings) as lib:
        facts = library_status(lib)
        lost = _lost_weights(lib)
    if as_json:
        echo_json(facts)
    else:
        for key, value in facts.items():
            if key == "representation" and value is not None:
                value = _representation_line(value)
            click.echo(f"{key:>16}: {value}")
        if lost:
            click.echo(f"warning: {lost}", err=True)


def _lost_weights(lib) -> str | None:
    """What to say when the current tuned representation's weights file is gone: searching by a
    file, indexing and tuning need it."""
    rep = lib.current_representation()
    if rep is None or rep.parent_id is None:
        return None
    path = lib.representation_weights(rep)
    if path is None or path.is_file():
        return None
    return (f"the weights file of representation {rep.id}, {path}, is missing: search by a file, index and "
            f"tune need it; restore it, or `lookalike tune --revert` goes back to representation {rep.parent_id}")


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
        "engine": meta.get("engine"),  # engine and precision of the last run that embedded
        "dim": int(meta["dim"]) if meta.get("dim") else None,
        "schema_version": int(meta["schema_version"]),
        "memory_budget": lib.memory_budget,
    }
    for key in ("index_type", "index_size", "index_recall_at_10", "index_memory_bytes"):
        if key in meta:
            facts[key] = json.loads(meta[key]) if meta[key][:1] in "0123456789[{" else meta[key]
    from search.tuning import representation_facts

    facts["representation"] = representation_facts(lib)
    return facts


def _representation_line(rep: dict) -> str:
    if rep["parent"] is None:
        return f"{rep['id']} (the backbone's weights, not tuned)"
    measured = ""
    if rep["frozen_accuracy"] is not None and rep["tuned_accuracy"] is not None:
        measured = f", held-out accuracy {rep['frozen_accuracy']:.3f} -> {rep['tuned_accuracy']:.3f}"
    return f"{rep['id']} (tuned from {rep['parent']}{measured})"


@click.command()
def backbones():
    """The backbones lookalike knows."""
    from indexer.backbone import list_backbones

    for name, about in list_backbones().items():
        click.echo(f"{name:20} {about}")


COMMANDS = [index, status, backbones]
