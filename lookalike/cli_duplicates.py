"""The duplicates command: groups of copies or similar shots, the review's choice, and moving the rest aside."""

from __future__ import annotations

from pathlib import Path

import click

from lookalike.options import echo_json, library_option, open_library, settings_from

# Repeated in the help text so `lookalike --help` need not import FAISS; a test keeps them equal.
DEFAULT_DUPLICATE_THRESHOLD = 0.9  # search.duplicates.candidates.SIMILAR_THRESHOLD

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
    type=float,
    default=None,
    help="Cosine above which two photos are similar shots (--kind similar), in (0, 1] "
    f"[{DEFAULT_DUPLICATE_THRESHOLD}].",
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
    from search.duplicates.candidates import SIMILAR_THRESHOLD, check_similar_threshold, find_tiers, groups_of
    from search.duplicates.review import (
        ReviewError,
        check_plan,
        dismissed_pairs,
        move_files,
        plan_csv,
        removal_plan,
        review,
    )

    if threshold is not None:
        try:
            check_similar_threshold(threshold)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--threshold'") from None

    with open_library(settings_from(library=library)) as lib:
        tiers = find_tiers(lib, similar_threshold=SIMILAR_THRESHOLD if threshold is None else threshold)
        with lib.Session() as s:
            groups = groups_of(tiers, kind, dismissed_pairs(s, kind))
            reviewed, _ = review(s, groups)
            plan = removal_plan(s, groups) if (remove_csv or move_to) else []
        root = lib.root
    plan, held = check_plan(plan, root)
    for why in held:
        click.echo(f"not planned: {why}", err=True)
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
        echo_json([_group_json(r) for r in reviewed])
        return
    photos = len({i for r in reviewed for i in r.group.image_ids})
    what = "copies of the same photo" if kind == "copies" else "similar shots"
    click.echo(f"{len(reviewed)} groups of {what}, {photos} photos")
    for n, r in enumerate(reviewed, start=1):
        click.echo(f"group {n}: {len(r.group.image_ids)} photos; keep {_kept(r)} ({r.suggestion.reason})")
        for d in r.decisions:
            click.echo(f"  {d.action:<9} {d.image_id:>7}  {d.path}")


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
            {"a": p.a, "b": p.b, "cosine": _score(p.score), "hash_distance": p.hash_distance, "inliers": p.inliers,
             "why": p.why}
            for p in g.pairs
        ],
        "keep": {"image_id": r.suggestion.image_id, "path": paths.get(r.suggestion.image_id),
                 "reason": r.suggestion.reason},
        "actions": {d.path: d.action for d in r.decisions},
    }


COMMANDS = [duplicates]
