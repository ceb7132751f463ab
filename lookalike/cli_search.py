"""Commands that read the library: search, labels, eval, duplicates."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from lookalike.options import backbone_options, library_option, open_library, settings_from

# Repeated in the help text so `lookalike --help` need not import FAISS; a test keeps them equal.
DEFAULT_DUPLICATE_THRESHOLD = 0.95


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


# -- search -----------------------------------------------------------------------------------------


def resolve_query(library, query: str) -> int | Path:
    """An image id for an id or a path in the library; a Path for any other image file."""
    from sqlalchemy import select

    from indexer.schema import Image

    with library.Session() as s:
        if query.isdigit() and s.get(Image, int(query)) is not None:
            return int(query)
        candidates = [query.replace("\\", "/").removeprefix("./")]
        root = library.root
        path = Path(query).expanduser()
        if root is not None and path.exists():
            try:
                candidates.append(path.resolve().relative_to(root).as_posix())
            except ValueError:
                pass
        for rel in candidates:
            image_id = s.scalar(select(Image.id).where(Image.path == rel))
            if image_id is not None:
                return int(image_id)
    if path.is_file():
        return path
    raise click.ClickException(
        f"{query!r} is not an image id, a path in the library ({root}) or an image file"
    )


@click.command()
@click.argument("query")
@library_option
@click.option("-k", type=click.IntRange(1, 1000), default=None, help="How many neighbours [20].")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON list of {id, path, score, label}."
)
def search(query, library, k, as_json):
    """Images most like QUERY: an image id, a path in the library, or any image file."""
    from indexer.imageio import ImageError
    from indexer.library import LibraryError
    from search.searcher import NotFound, Searcher

    settings = settings_from(library=library, k=k)
    try:
        with open_library(settings) as lib:
            searcher = Searcher(lib)
            target = resolve_query(lib, query)
            if isinstance(target, int):
                hits = searcher.by_id(target, settings.k)
            else:
                hits = searcher.by_image(target.read_bytes(), settings.k)
            with lib.Session() as s:
                rows = [
                    {
                        "id": row.id,
                        "path": row.path,
                        "score": round(score, 4),
                        "label": row.label.label if row.label else None,
                    }
                    for row, score in searcher.fetch(s, hits)
                ]
    except (NotFound, ImageError, LibraryError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        click.echo(
            f"{r['score']:.3f}  {r['id']:>7}  {r['path']}"
            + (f"  [{r['label']}]" if r["label"] else "")
        )


# -- labels -----------------------------------------------------------------------------------------


@click.group()
def labels():
    """Import, export and count labels (one per image)."""


@labels.command("import")
@click.argument(
    "csv_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--folders", is_flag=True, help="Label each image by the name of its folder.")
@click.option("--overwrite", is_flag=True, help="Replace labels set by hand too.")
@library_option
def labels_import(csv_file, folders, overwrite, library):
    """Labels from CSV_FILE (path,label columns; paths relative to the photo root) or from --folders."""
    from search.labels import LabelFileError, import_csv, import_folders

    if bool(csv_file) == bool(folders):
        raise click.UsageError("give either CSV_FILE or --folders")
    try:
        with open_library(settings_from(library=library)) as lib:
            n = (
                import_folders(lib, overwrite=overwrite)
                if folders
                else import_csv(lib, csv_file, overwrite=overwrite)
            )
    except LabelFileError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"set {n} labels from {'folder names' if folders else csv_file}")
    if n:  # the stored head's labels fingerprint no longer matches: the next suggest, queue or web request retrains
        click.echo("the labeller retrains on its next use (`lookalike learn` trains now)")


@labels.command("export")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@library_option
def labels_export(csv_file, library):
    """Write every label to CSV_FILE (path,label,source,set_at)."""
    from search.labels import export_csv

    try:
        with open_library(settings_from(library=library)) as lib:
            n = export_csv(lib, csv_file)
    except OSError as e:
        raise click.ClickException(f"cannot write {csv_file}: {e}") from None
    click.echo(f"exported {n} labels to {csv_file}")


@labels.command("counts")
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def labels_counts(library, as_json):
    """Images per label."""
    from search.labels import label_counts

    with open_library(settings_from(library=library)) as lib:
        with lib.Session() as s:
            counts = label_counts(s)
    if as_json:
        _echo_json(counts)
    else:
        for label, n in counts.items():
            click.echo(f"{n:>7}  {label}")


# -- eval -------------------------------------------------------------------------------------------


@click.command("eval")
@click.argument(
    "photos", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@library_option
@backbone_options
@click.option("-k", type=click.IntRange(1, 1000), default=None, help="Neighbours that vote [20].")
@click.option(
    "--temperature",
    type=click.FloatRange(0, min_open=True),
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
    "--workers", type=click.IntRange(0, 64), default=None, help="Decoding processes (with PHOTOS)."
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
    from indexer.backbone import Backbone, BackboneError
    from indexer.library import Library, LibraryError
    from search.evaluate import EvalError, evaluate
    from search.labels import import_folders

    settings = settings_from(
        library=library,
        backbone=backbone,
        weights=weights,
        device=device,
        precision=precision,
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
                methods = compare_methods(lib, settings, labels_per_class)
        else:
            from indexer.pipeline import index_folder

            net = Backbone(
                settings.backbone,
                weights=settings.weights,
                device=settings.device,
                precision=settings.precision,
            )
            with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as tmp:
                with Library(tmp, create=True) as lib:
                    index_folder(
                        photos,
                        lib,
                        net,
                        batch_size=settings.batch_size,
                        workers=settings.workers,
                        progress=sys.stderr.isatty(),
                    )
                    import_folders(lib)
                    report = evaluate(lib, settings.k, settings.temperature)
                    methods = compare_methods(lib, settings, labels_per_class)
    except (EvalError, LibraryError, BackboneError) as e:
        raise click.ClickException(str(e)) from None
    facts = report.to_dict()
    threshold = report.threshold_for(target_precision)
    facts["target_precision"] = target_precision
    facts["threshold"] = None if threshold is None else round(threshold, 4)
    if photos is not None:
        facts["precision"] = net.precision
    facts.update(methods)
    if as_json:
        _echo_json(facts)
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
            f"suggestions with confidence >= {threshold:.3f} are {target_precision:.0%} right "
            f"and cover {report.coverage_at(threshold):.0%} of images"
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


def compare_methods(lib, settings, labels_per_class: int | None) -> dict:
    """k-NN, probe, projection k-NN and blend side by side (and with N labels per class)."""
    from search.compare import cross_validated, few_labels
    from search.head import CV_FOLDS, choose_from
    from search.learning import labelled_set

    data = labelled_set(lib)
    accuracy = cross_validated(data.vectors, data.labels, settings.k, settings.temperature)
    out: dict = {"methods": accuracy, "chosen": choose_from(accuracy), "folds": CV_FOLDS}
    if labels_per_class is not None:
        few = few_labels(data.vectors, data.labels, labels_per_class, settings.k, settings.temperature)
        out["labels_per_class"] = {"n": few.per_class, "draws": few.draws, "accuracy": few.accuracy, "std": few.spread}
    return out


# -- duplicates ---------------------------------------------------------------------------------------


@click.command()
@library_option
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    default=None,
    help=f"Cosine above which two photos are near-duplicates [{DEFAULT_DUPLICATE_THRESHOLD}; "
    "0.85 also finds grayscale copies and thumbnails, with more look-alikes].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of groups.")
def duplicates(library, threshold, as_json):
    """Groups of near-duplicate photos, largest first."""
    from sqlalchemy import select

    from indexer.schema import Image
    from search.duplicates import DEFAULT_THRESHOLD, find_duplicates

    with open_library(settings_from(library=library)) as lib:
        groups = find_duplicates(lib, threshold)
        ids = sorted({i for g in groups for i in g.image_ids})
        paths: dict[int, str] = {}
        with lib.Session() as s:
            for start in range(0, len(ids), 500):
                paths.update(
                    s.execute(
                        select(Image.id, Image.path).where(Image.id.in_(ids[start : start + 500]))
                    ).all()
                )
    if as_json:
        _echo_json(
            [
                {
                    "image_ids": g.image_ids,
                    "paths": [paths.get(i) for i in g.image_ids],
                    "pairs": [[a, b, round(score, 4)] for a, b, score in g.pairs],
                }
                for g in groups
            ]
        )
        return
    used = DEFAULT_THRESHOLD if threshold is None else threshold
    click.echo(f"{len(groups)} groups, {len(ids)} photos above cosine {used}")
    for n, g in enumerate(groups, start=1):
        click.echo(f"group {n}: {len(g.image_ids)} photos, best pair {g.pairs[0][2]:.3f}")
        for i in g.image_ids:
            click.echo(f"  {i:>7}  {paths.get(i)}")


COMMANDS = [search, labels, eval_, duplicates]
