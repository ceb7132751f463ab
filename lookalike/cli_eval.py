"""The eval command: how well the labeller does on a library's labels, or on a class-per-folder directory."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import click

from lookalike.options import (
    backbone_options,
    echo_json,
    library_option,
    open_library,
    run_index,
    setting_type,
    settings_from,
)


@click.command("eval")
@click.argument(
    "photos", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@library_option
@backbone_options
@click.option("-k", type=setting_type("k"), default=None, help="Neighbours that vote [20].")
@click.option(
    "--temperature",
    type=setting_type("temperature"),
    default=None,
    help="Vote weight exp(sim / T) [0.07].",
)
@click.option(
    "--target-precision",
    type=click.FloatRange(0, 1),
    default=0.95,
    show_default=True,
    help="Report the confidence above which suggestions are this precise.",
)
@click.option(
    "--workers", type=setting_type("workers"), default=None, help="Decoding processes (with PHOTOS)."
)
@click.option(
    "--labels-per-class",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Also: accuracy on the unlabelled rest when only N photos per class are labelled (mean of 5 draws).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def eval_(
    ctx,
    photos,
    library,
    backbone,
    weights,
    device,
    precision,
    engine,
    k,
    temperature,
    target_precision,
    workers,
    labels_per_class,
    as_json,
):
    """Leave-one-out weighted k-NN accuracy of the library's labels, and the learned methods beside it.

    With PHOTOS, a class-per-folder directory is indexed into a temporary library and its folder
    names are the labels: one command from photos to figures.
    """
    from indexer.library import LibraryError
    from search.labelling.compare import compare_methods
    from search.labelling.evaluate import EvalError, evaluate
    from search.labelling.labels import import_folders

    settings = settings_from(
        library=library,
        backbone=backbone,
        weights=weights,
        device=device,
        precision=precision,
        engine=engine,
        k=k,
        temperature=temperature,
        workers=workers,
    )
    if (
        photos is not None
        and ctx.get_parameter_source("library") == click.core.ParameterSource.COMMANDLINE
    ):
        raise click.UsageError(
            "give PHOTOS (indexed into a temporary library) or --library, not both"
        )
    try:
        if photos is None:
            with open_library(settings) as lib:
                report = evaluate(lib, settings.k, settings.temperature)
                methods = compare_methods(lib, settings.k, settings.temperature, labels_per_class)
        else:
            with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as tmp:
                # `index`'s path into a temporary library (its engine and runner choice included)
                settings = replace(settings, library=Path(tmp))
                run = run_index(settings, photos, progress=sys.stderr.isatty(), refresh=False)
                with open_library(settings) as lib:
                    import_folders(lib)
                    report = evaluate(lib, settings.k, settings.temperature)
                    methods = compare_methods(lib, settings.k, settings.temperature, labels_per_class)
    except (EvalError, LibraryError) as e:
        raise click.ClickException(str(e)) from None
    facts = report.to_dict()
    threshold = report.threshold_for(target_precision)
    facts["target_precision"] = target_precision
    facts["threshold"] = None if threshold is None else round(threshold, 4)
    if photos is not None:
        facts["precision"] = run.backbone.precision
    facts.update(methods)
    if as_json:
        echo_json(facts)
        return
    click.echo(
        f"top-1 {report.top1:.3f}, top-5 {report.top5:.3f}, precision@10 {report.precision_at_10:.3f}, "
        f"mAP {report.mean_ap:.3f} over {report.images} images in {report.classes} classes "
        f"(k={report.k}, T={report.temperature})"
    )
    if threshold is None:
        click.echo(f"no confidence threshold reaches precision {target_precision:.0%}")
    else:
        click.echo(
            f"suggestions with confidence >= {threshold:.3f} are {report.precision_at(threshold) or 0:.0%} right "
            f"(target {target_precision:.0%}) and cover {report.coverage_at(threshold):.0%} of images"
        )
    click.echo(
        "cross-validated ({} folds): ".format(methods["folds"])
        + ", ".join(f"{m} {a:.3f}" for m, a in methods["methods"].items())
        + f"; the labeller would use {methods['chosen']}"
    )
    few = methods.get("labels_per_class")
    if few:
        click.echo(
            f"with {few['n']} labels per class, accuracy on the rest (mean of {few['draws']} draws): "
            + ", ".join(f"{m} {a:.3f}" for m, a in few["accuracy"].items())
        )
    width = max(len(c) for c in report.class_names)
    click.echo(f"{'class':<{width}}  precision  recall  support")
    for c, stats in report.per_class.items():
        click.echo(
            f"{c:<{width}}  {stats['precision']:9.3f}  {stats['recall']:6.3f}  {stats['support']:7d}"
        )


COMMANDS = [eval_]
