"""The labels command group: import, export and count labels; list the ones that look wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lookalike.options import echo_json, library_option, open_library, settings_from

XMP_PARENT = "lookalike"  # search.labelling.xmp_sidecar.DEFAULT_PARENT, named here so that --help imports nothing


@click.group()
def labels():
    """Import, export and count labels (one per image); list the ones that look wrong."""


@labels.command("import")
@click.argument(
    "csv_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--folders", is_flag=True, help="Label each image by the name of its folder.")
@click.option("--xmp", is_flag=True,
              help="Label each image by its XMP keyword under --parent: sidecars (photo.jpg.xmp, photo.xmp) "
              "and XMP embedded in the photo.")
@click.option("--all-keywords", is_flag=True, help="With --xmp: any keyword, not only those under --parent.")
@click.option("--parent", default=XMP_PARENT, show_default=True,
              help="With --xmp: the hierarchical keyword the labels are under (lr:hierarchicalSubject parent|label).")
@click.option("--overwrite", is_flag=True, help="Replace labels set by hand too.")
@library_option
def labels_import(csv_file, folders, xmp, all_keywords, parent, overwrite, library):
    """Labels from CSV_FILE (path,label columns; paths relative to the photo root), --folders or --xmp."""
    from search.labelling.labels import LabelFileError, apply_labels, import_folders, read_csv

    if sum(map(bool, (csv_file, folders, xmp))) != 1:
        raise click.UsageError("give either CSV_FILE or --folders (or --xmp)")
    if all_keywords and not xmp:
        raise click.UsageError("--all-keywords goes with --xmp")
    if xmp:
        _import_xmp(library, None if all_keywords else parent, overwrite)
        return
    repeated = 0
    try:
        with open_library(settings_from(library=library)) as lib:
            if folders:
                n = import_folders(lib, overwrite=overwrite)
            else:
                by_path, repeated = read_csv(csv_file)
                n = apply_labels(lib, by_path, overwrite=overwrite)
    except LabelFileError as e:
        raise click.ClickException(str(e)) from None
    twice = f"; {repeated} {'path' if repeated == 1 else 'paths'} listed twice, the last row kept" if repeated else ""
    click.echo(f"set {n} labels from {'folder names' if folders else csv_file}{twice}")
    if n:  # the stored head's labels fingerprint no longer matches: the next suggest, queue or web request retrains
        click.echo("the labeller retrains on its next use (`lookalike learn` trains now)")


def _import_xmp(library, parent: str | None, overwrite: bool) -> None:
    from search.labelling.xmp_labels import import_xmp

    with open_library(settings_from(library=library)) as lib:
        root = _photo_root(lib)
        try:
            report = import_xmp(lib, root, parent=parent, overwrite=overwrite)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--parent'") from None
    for line in report.ambiguous:
        click.echo(f"several labels, skipped: {line}", err=True)
    for line in report.problems:
        click.echo(f"skipped {line}", err=True)
    under = "any keyword" if parent is None else f"keywords under {parent!r}"
    click.echo(f"set {report.set} labels from XMP {under} ({report.found} photos had one)"
               + (f"; {len(report.ambiguous)} with several skipped" if report.ambiguous else "")
               + (f"; {len(report.problems)} sidecars unreadable" if report.problems else ""))
    if report.set:
        click.echo("the labeller retrains on its next use (`lookalike learn` trains now)")
    if report.problems:
        sys.exit(1)


def _photo_root(lib) -> Path:
    if lib.root is None:
        raise click.ClickException("this library has not indexed a folder yet: run `lookalike index` first")
    return Path(lib.root)


@labels.command("export")
@click.argument("csv_file", required=False, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--xmp", is_flag=True,
              help="Write each label as an XMP keyword into the photo's sidecar (merged into an existing one; "
              "the photo itself is never changed), instead of CSV_FILE.")
@click.option("--sidecar", type=click.Choice(["darktable", "lightroom"]), default="darktable", show_default=True,
              help="With --xmp: darktable/digiKam name the sidecar photo.jpg.xmp, Lightroom photo.xmp.")
@click.option("--parent", default=XMP_PARENT, show_default=True,
              help="With --xmp: the hierarchical keyword above the labels (lr:hierarchicalSubject parent|label).")
@library_option
def labels_export(csv_file, xmp, sidecar, parent, library):
    """Write every label to CSV_FILE (path,label,source,set_at); - writes to standard output; or
    with --xmp, into XMP sidecars as keywords (dc:subject label, lr:hierarchicalSubject parent|label)."""
    from search.labelling.labels import export_csv, write_csv

    if bool(csv_file) == bool(xmp):
        raise click.UsageError("give either CSV_FILE or --xmp")
    if xmp:
        _export_xmp(library, sidecar, parent)
        return
    to_stdout = str(csv_file) == "-"
    try:
        with open_library(settings_from(library=library)) as lib:
            if to_stdout:
                n = write_csv(lib, sys.stdout)
            else:
                n = export_csv(lib, csv_file)
    except OSError as e:
        raise click.ClickException(f"cannot write {csv_file}: {e}") from None
    click.echo(f"exported {n} labels to {'standard output' if to_stdout else csv_file}", err=to_stdout)


def _export_xmp(library, naming: str, parent: str) -> None:
    from search.labelling.xmp_labels import export_xmp

    with open_library(settings_from(library=library)) as lib:
        root = _photo_root(lib)
        try:
            report = export_xmp(lib, root, naming=naming, parent=parent)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--parent'") from None
    for line in report.problems:
        click.echo(f"skipped {line}", err=True)
    click.echo(f"wrote {report.written} XMP sidecars ({naming} naming), {report.unchanged} already up to date"
               + (f"; {len(report.problems)} skipped" if report.problems else ""))
    if report.problems:
        sys.exit(1)


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
        echo_json(counts)
    else:
        for label, n in counts.items():
            click.echo(f"{n:>7}  {label}")


@labels.command("suspicious")
@library_option
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of {image_id, path, label, suggested, confidence, margin, neighbours}.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many photos.")
def labels_suspicious(library, as_json, limit):
    """Labelled photos whose cross-validated prediction confidently disagrees with their label, worst first."""
    from lookalike.cli_learn import _labeller, _paths
    from search.labelling.suspicious import suspicious

    settings = settings_from(library=library)
    with open_library(settings) as lib:
        check = suspicious(_labeller(lib, settings), limit)
        paths = _paths(lib, [s.image_id for s in check.suspects])
    out = [
        {
            "image_id": s.image_id, "path": paths.get(s.image_id), "label": s.label, "suggested": s.suggested,
            "confidence": round(s.confidence, 4), "margin": round(s.margin, 4),
            "neighbours": [{"image_id": e.image_id, "label": e.label, "score": round(e.score, 4)}
                           for e in s.neighbours],
        }
        for s in check.suspects
    ]
    if as_json:
        echo_json(out)
        return
    for r in out:
        near = ", ".join(f"{e['label']} {e['score']:.2f}" for e in r["neighbours"][:3]) or "no labelled neighbour"
        click.echo(f"{r['margin']:.3f}  {r['image_id']:>7}  {r['path']}  {r['label']} -> {r['suggested']} "
                   f"({r['confidence']:.2f}; nearest: {near})")
    if not check.checked:
        click.echo("too few labels to check (label at least two photos in each of two classes)")
    else:
        shown = f" ({len(out)} shown)" if len(out) < check.found else ""
        click.echo(f"{check.found} of {check.checked} labelled photos look mislabelled by cross-validation{shown}")


COMMANDS = [labels]
