"""Commands of the learned labeller: learn (train and compare), suggest (every unlabelled photo), queue."""

from __future__ import annotations

import click

from lookalike.options import echo_json, library_option, open_library, settings_from


def _labeller(lib, settings):
    from search.labelling.labeller import Labeller
    from search.searcher import Searcher

    return Labeller(Searcher(lib), k=settings.k, temperature=settings.temperature)


def _paths(lib, ids: list[int]) -> dict[int, str]:
    from sqlalchemy import select

    from indexer.schema import Image

    out: dict[int, str] = {}
    with lib.Session() as s:
        for start in range(0, len(ids), 500):
            out.update(s.execute(select(Image.id, Image.path).where(Image.id.in_(ids[start : start + 500]))).all())
    return out


def representation_line(rep: dict | None) -> str:
    """One line on the current representation: tuned or not, and what its tune measured."""
    if rep is None:
        return "none (nothing indexed)"
    if not rep["tuned"]:
        return f"{rep['id']}, the backbone's own weights (not tuned; `lookalike tune` fine-tunes it on your labels)"
    measured = ""
    if rep["frozen_accuracy"] is not None and rep["tuned_accuracy"] is not None:
        measured = f"; held-out accuracy {rep['frozen_accuracy']:.3f} before, {rep['tuned_accuracy']:.3f} after"
    return f"{rep['id']}, tuned on your labels from {rep['parent']}{measured}"


@click.command()
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def learn(library, as_json):
    """Train the labeller on the library's labels now and compare its methods by cross-validation."""
    import time

    from search.labelling.labeller import labelled_set
    from search.labelling.learned_head import TARGET_PRECISION

    settings = settings_from(library=library)
    with open_library(settings) as lib:
        labeller = _labeller(lib, settings)
        start = time.perf_counter()
        labeller.retrain(force=True)
        seconds = time.perf_counter() - start
        facts = labeller.facts() or {}
        labelled = len(labelled_set(lib).labels)
        from search.tuning import representation_facts

        representation = representation_facts(lib)
    out = {
        "labelled": labelled,
        "classes": facts.get("classes", 0),
        "cv_images": facts.get("cv_images", 0),
        "accuracy": facts.get("accuracy", {}),
        "method": facts.get("method"),
        "target_precision": TARGET_PRECISION,
        "threshold": None if facts.get("threshold") is None else round(facts["threshold"], 4),
        "coverage": None if facts.get("coverage") is None else round(facts["coverage"], 4),
        "calibration_temperature": facts.get("temperature"),
        "seconds": round(seconds, 3),
        "representation": representation,  # the vectors the methods ran on (`lookalike tune` changes them)
    }
    if as_json:
        echo_json(out)
        return
    if not out["accuracy"]:
        click.echo(
            f"{labelled} labelled photos in {out['classes']} classes: too few to compare methods "
            "(label at least two photos in each of two classes); suggestions come from k-NN"
        )
        return
    click.echo(f"representation: {representation_line(representation)}")
    click.echo(f"cross-validated accuracy on {out['cv_images']} of {labelled} labelled photos:")
    for method, accuracy in out["accuracy"].items():
        mark = "  <- chosen" if method == out["method"] else ""
        click.echo(f"  {method:<15} {accuracy:.3f}{mark}")
    if out["threshold"] is None:
        click.echo(f"no confidence reaches {TARGET_PRECISION:.0%} precision yet")
    else:
        click.echo(
            f"suggestions with confidence >= {out['threshold']:.3f} are at least {TARGET_PRECISION:.0%} right "
            f"(cross-validated) and cover {out['coverage']:.0%} of them"
        )


@click.command()
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, path, label, confidence}.")
def suggest(library, as_json):
    """Every unlabelled indexed photo with its suggested label and calibrated confidence."""
    from sqlalchemy import select

    from indexer.schema import Image, Label, SuggestedLabel

    settings = settings_from(library=library)
    with open_library(settings) as lib:
        labeller = _labeller(lib, settings)
        labeller.retrain()  # only when the labels changed since the stored head was trained
        with lib.Session() as s:
            rows = s.execute(
                select(Image.id, Image.path, SuggestedLabel.label, SuggestedLabel.confidence)
                .join(SuggestedLabel, SuggestedLabel.image_id == Image.id)
                .outerjoin(Label, Label.image_id == Image.id)
                .where(Label.image_id.is_(None))
                .order_by(Image.path)
            ).all()
    out = [
        {"id": i, "path": p, "label": lab, "confidence": round(float(c), 4) if lab is not None else None}
        for i, p, lab, c in rows
    ]
    if as_json:
        echo_json(out)
        return
    for r in out:
        conf = f"{r['confidence']:.3f}" if r["label"] is not None else "  -  "
        click.echo(f"{conf}  {r['id']:>7}  {r['path']}  [{r['label'] or 'no suggestion'}]")


@click.command()
@library_option
@click.option("-n", "count", type=click.IntRange(1, 100_000), default=20, show_default=True,
              help="How many photos.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, path}, best first.")
def queue(library, count, as_json):
    """The photos to label next, best first (the web queue's order)."""
    settings = settings_from(library=library)
    with open_library(settings) as lib:
        labeller = _labeller(lib, settings)
        labeller.retrain()
        ids = [int(i) for i in labeller.queue_ids()[:count]]
        paths = _paths(lib, ids)
    out = [{"id": i, "path": paths[i]} for i in ids if i in paths]
    if as_json:
        echo_json(out)
        return
    for r in out:
        click.echo(f"{r['id']:>7}  {r['path']}")


COMMANDS = [learn, suggest, queue]
