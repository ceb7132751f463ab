"""Commands that read the library: search, labels, eval, duplicates."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from lookalike.options import backbone_options, library_option, open_library, setting_type, settings_from

# Repeated in the help text so `lookalike --help` need not import FAISS; a test keeps them equal.
DEFAULT_DUPLICATE_THRESHOLD = 0.9  # search.duplicates.candidates.SIMILAR_THRESHOLD


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


# -- search -----------------------------------------------------------------------------------------


def resolve_query(library, query: str) -> int | Path:
    """An image id for an id or a path in the library; a Path for any other image file."""
    from sqlalchemy import select

    from indexer.schema import Image

    with library.Session() as s:
        # An id is a 64-bit SQLite integer: a longer number can only be a file name.
        if query.isdigit() and len(query) <= 19 and int(query) < 2**63 and s.get(Image, int(query)) is not None:
            return int(query)
        candidates = [query.replace("\\", "/").removeprefix("./")]
        root = library.root
        path = Path(query).expanduser()
        try:
            exists, is_file = path.exists(), path.is_file()
        except OSError:  # a name too long for the file system, say: no such file
            exists = is_file = False
        if root is not None and exists:
            try:
                candidates.append(path.resolve().relative_to(root).as_posix())
            except ValueError:
                pass
        for rel in candidates:
            image_id = s.scalar(select(Image.id).where(Image.path == rel))
            if image_id is not None:
                return int(image_id)
    if is_file:
        return path
    raise click.ClickException(
        f"{query!r} is not an image id, a path in the library ({root}) or an image file"
    )


@click.command()
@click.argument("query")
@library_option
@click.option("-k", type=setting_type("k"), default=None, help="How many neighbours [20].")
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
            searcher = Searcher(lib, settings=settings)
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
    from search.labelling.labels import LabelFileError, import_csv, import_folders

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
    from search.labelling.labels import export_csv

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
    from search.labelling.labels import label_counts

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
    from indexer.backbone import Backbone, BackboneError
    from indexer.engines import EngineError
    from indexer.library import Library, LibraryError
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
                        engine=settings.engine,
                    )
                    import_folders(lib)
                    report = evaluate(lib, settings.k, settings.temperature)
                    methods = compare_methods(lib, settings, labels_per_class)
    except (EvalError, LibraryError, BackboneError, EngineError) as e:
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
    from search.labelling.compare import cross_validated, few_labels
    from search.labelling.learned_head import CV_FOLDS, choose_from
    from search.labelling.learning import labelled_set

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
    "--kind",
    type=click.Choice(["copies", "similar"]),
    default="copies",
    show_default=True,
    help="copies: the same photo edited, re-encoded, resized, cropped, mirrored or captioned; "
    "similar: different shots that look alike (bursts).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    default=None,
    help=f"Cosine above which two photos are similar shots (--kind similar) [{DEFAULT_DUPLICATE_THRESHOLD}].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of groups.")
@click.option(
    "--remove-csv",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the paths the review says to remove (all but the kept copy of each group) to this CSV.",
)
@click.option(
    "--move-to",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Move those photos into this folder (outside the photo folder), keeping their relative paths. "
    "lookalike never deletes a photo.",
)
def duplicates(library, kind, threshold, as_json, remove_csv, move_to):
    """Groups of near-duplicate photos, largest first, each with the copy to keep."""
    if threshold is not None and kind == "copies":
        raise click.UsageError("--threshold sets the similar tier's cosine: add --kind similar")
    from search.duplicates.candidates import SIMILAR_THRESHOLD, find_tiers, groups_of
    from search.duplicates.review import ReviewError, dismissed_pairs, move_files, plan_csv, removal_plan, review

    with open_library(settings_from(library=library)) as lib:
        tiers = find_tiers(lib, similar_threshold=SIMILAR_THRESHOLD if threshold is None else threshold)
        with lib.Session() as s:
            groups = groups_of(tiers, kind, dismissed_pairs(s, kind))
            reviewed, _ = review(s, groups)
            plan = removal_plan(s, groups) if (remove_csv or move_to) else []
        root = lib.root
    if tiers.missing_signals:
        click.echo(
            f"note: {tiers.missing_signals} photos have no duplicate signals yet (indexed by an older "
            "lookalike): run `lookalike index` to add them; until then copies of them are found by "
            "embedding alone",
            err=True,
        )
    if remove_csv:
        try:
            remove_csv.write_text(plan_csv(plan))
        except OSError as e:
            raise click.ClickException(f"cannot write {remove_csv}: {e}") from None
        click.echo(f"wrote {len(plan)} paths to remove to {remove_csv}", err=True)
    if move_to:
        if root is None:
            raise click.ClickException("the library has no photo folder yet: run `lookalike index` first")
        try:
            moved = move_files(plan, root, move_to)
        except (ReviewError, OSError) as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"moved {len(moved)} photos to {move_to}", err=True)
    if as_json:
        _echo_json([_group_json(r) for r in reviewed])
        return
    photos = len({i for r in reviewed for i in r.group.image_ids})
    what = "copies of the same photo" if kind == "copies" else "similar shots"
    click.echo(f"{len(reviewed)} groups of {what}, {photos} photos")
    for n, r in enumerate(reviewed, start=1):
        click.echo(f"group {n}: {len(r.group.image_ids)} photos; keep {_kept(r)} ({r.suggestion.reason})")
        for d in r.decisions:
            click.echo(f"  {d.action:<6} {d.image_id:>7}  {d.path}")


def _kept(r) -> str:
    return next(d.path for d in r.decisions if d.image_id == r.suggestion.image_id)


def _score(x: float) -> float | None:
    return None if x != x else round(x, 4)  # NaN: one of the two has no vector


def _group_json(r) -> dict:
    g = r.group
    paths = {d.image_id: d.path for d in r.decisions}
    return {
        "kind": g.kind,
        "image_ids": g.image_ids,
        "paths": [paths.get(i) for i in g.image_ids],
        "pairs": [[p.a, p.b, _score(p.score)] for p in g.pairs],
        "evidence": [
            {"a": p.a, "b": p.b, "cosine": _score(p.score), "hash_distance": p.hash_distance, "inliers": p.inliers}
            for p in g.pairs
        ],
        "keep": {"image_id": r.suggestion.image_id, "path": paths.get(r.suggestion.image_id),
                 "reason": r.suggestion.reason},
        "actions": {d.path: d.action for d in r.decisions},
    }


COMMANDS = [search, labels, eval_, duplicates]
