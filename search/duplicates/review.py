"""Reviewing duplicate groups: which copy to keep and why, a person's keep/remove choices, groups
dismissed as "not duplicates", and the removal plan (exported as CSV, or moved on request).

lookalike never deletes a photo: the plan is a list, and `move_files` moves files into a folder the
user names, keeping their relative paths.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from indexer.imageio import is_raw
from indexer.schema import DismissedPair, DuplicateChoice, Image, utcnow
from search.csv_cells import safe_cell
from search.duplicates.candidates import KINDS, SIMILAR, DuplicateGroup
from search.duplicates.shots import ShotQuality, shot_qualities

log = logging.getLogger(__name__)

KEEP = "keep"
REMOVE = "remove"
CHOICES = (KEEP, REMOVE)
UNDECIDED = "undecided"  # a similar shot nobody chose for: never removed, never kept by default
MAX_GROUP = 500  # photos in one dismissed group: a group that big is a threshold problem, not a review


class ReviewError(Exception):
    """A review action that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class Suggestion:
    image_id: int
    reason: str  # "largest (4032 x 3024)", "least compressed (2.1 bytes/pixel)", "oldest (2021-06-01)"


@dataclass(frozen=True)
class Decision:
    """One member of a reviewed group: keep it or remove it, and whether a person chose so."""

    image_id: int
    path: str
    action: str  # KEEP or REMOVE; in the similar tier UNDECIDED until a person chooses
    chosen: bool  # set by a person (else it follows the suggestion)


def _pixels(row: Image) -> int:
    return (row.width or 0) * (row.height or 0)


def _bytes_per_pixel(row: Image) -> float:
    return row.size / _pixels(row) if _pixels(row) else 0.0


def _age(row: Image) -> datetime:
    return row.taken_at or datetime.fromtimestamp(row.mtime)


def suggest_keep(rows: list[Image]) -> Suggestion:
    """The copy to keep: a camera RAW (the original of its shot), then largest resolution, then least
    compressed (bytes per pixel), then oldest (EXIF date, else file time), then the shortest path.
    The reason names the deciding rule."""
    if not rows:
        raise ReviewError("an empty group has nothing to keep")
    ranked = sorted(rows, key=lambda r: (
        not is_raw(r.path), -_pixels(r), -_bytes_per_pixel(r), _age(r), len(r.path), r.path))
    best, others = ranked[0], ranked[1:]
    if len(rows) == 1:
        reason = "the only photo"
    elif is_raw(best.path) and not any(is_raw(r.path) for r in others):
        reason = f"the camera RAW ({best.format or best.path.rsplit('.', 1)[-1].upper()})"
    elif all(_pixels(best) > _pixels(r) for r in others if is_raw(r.path) == is_raw(best.path)):
        reason = f"largest ({best.width} x {best.height})"
    elif all(_bytes_per_pixel(best) > _bytes_per_pixel(r) for r in others if _pixels(r) == _pixels(best)):
        reason = f"least compressed ({_bytes_per_pixel(best):.2f} bytes/pixel)"
    elif all(_age(best) < _age(r) for r in others if _pixels(r) == _pixels(best)):
        reason = f"oldest ({_age(best):%Y-%m-%d %H:%M})"
    else:
        reason = "alike in size, compression and age: the first path"
    return Suggestion(best.id, reason)


def rows_of(session: Session, ids) -> dict[int, Image]:
    ids = sorted(set(ids))
    out: dict[int, Image] = {}
    for start in range(0, len(ids), 500):
        out.update((r.id, r) for r in session.scalars(select(Image).where(Image.id.in_(ids[start : start + 500]))))
    return out


# -- choices -------------------------------------------------------------------------------------------


def choices(session: Session, ids) -> dict[int, str]:
    ids = sorted(set(ids))
    out: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        out.update(session.execute(
            select(DuplicateChoice.image_id, DuplicateChoice.choice).where(DuplicateChoice.image_id.in_(part))
        ).all())
    return out


def set_choice(session: Session, image_id: int, choice: str | None) -> None:
    """Store keep/remove for a photo; None forgets the choice (the suggestion applies again)."""
    if choice is None:
        session.execute(delete(DuplicateChoice).where(DuplicateChoice.image_id == image_id))
        return
    if choice not in CHOICES:
        raise ReviewError(f"choice must be one of {', '.join(CHOICES)}")
    if session.get(Image, image_id) is None:
        raise ReviewError(f"no image {image_id}")
    upsert = sqlite_insert(DuplicateChoice).values(image_id=image_id, choice=choice, set_at=utcnow())
    session.execute(upsert.on_conflict_do_update(
        index_elements=[DuplicateChoice.image_id], set_={"choice": choice, "set_at": utcnow()}))


def best_shot(rows: list[Image], qualities: dict[int, ShotQuality]) -> Suggestion:
    """The shot of a burst to keep: the best sharpness x exposure (search/duplicates/shots.py); without
    stored copies to judge by, the copies tier's rule (largest, least compressed, oldest)."""
    judged = [r for r in rows if r.id in qualities]
    if len(judged) < len(rows) or len(rows) < 2:
        return suggest_keep(rows)
    best = max(judged, key=lambda r: (qualities[r.id].score, -len(r.path), r.path))
    q = qualities[best.id]
    return Suggestion(best.id, f"sharpest, well exposed (sharpness {q.sharpness:.0f}, {q.exposed:.0%} of pixels "
                               "neither black nor blown)")


def decide(group: DuplicateGroup, rows: dict[int, Image], chosen: dict[int, str],
           qualities: dict[int, ShotQuality] | None = None) -> tuple[Suggestion, list[Decision]]:
    """Each member's action: a person's choice where there is one, else keep the suggestion and
    remove the rest. A group is never emptied: if every member would go, the suggestion stays.
    Similar shots are never marked for removal by default: a person's choice or UNDECIDED (their
    suggestion is the best shot, by sharpness and exposure)."""
    members = [rows[i] for i in group.image_ids if i in rows]
    if group.kind == SIMILAR:
        suggestion = best_shot(members, qualities or {})
        actions = {r.id: chosen.get(r.id, UNDECIDED) for r in members}
    else:
        suggestion = suggest_keep(members)
        actions = {
            r.id: chosen.get(r.id, KEEP if r.id == suggestion.image_id else REMOVE) for r in members
        }
    if all(a == REMOVE for a in actions.values()):
        actions[suggestion.image_id] = KEEP
    return suggestion, [Decision(r.id, r.path, actions[r.id], r.id in chosen) for r in members]


# -- dismissals ----------------------------------------------------------------------------------------


def _hash_key(ha: str, hb: str) -> tuple[str, str]:
    return (ha, hb) if ha <= hb else (hb, ha)


def dismiss(session: Session, image_ids: list[int], kind: str) -> int:
    """Record every pair of these photos as "not duplicates" in this tier. Returns pairs stored."""
    if kind not in KINDS:
        raise ReviewError(f"kind must be one of {', '.join(KINDS)}")
    ids = sorted(set(image_ids))
    if len(ids) < 2:
        raise ReviewError("dismiss a group of at least two photos")
    if len(ids) > MAX_GROUP:
        raise ReviewError(f"at most {MAX_GROUP} photos at once")
    rows = rows_of(session, ids)
    hashes = {i: rows[i].hash for i in ids if i in rows}
    unknown = [i for i in ids if hashes.get(i) is None]
    if unknown:
        raise ReviewError(f"no indexed image {unknown[0]}")
    values = []
    for a, b in combinations(ids, 2):
        ha, hb = _hash_key(str(hashes[a]), str(hashes[b]))
        first, second = (a, b) if ha == hashes[a] else (b, a)
        values.append(dict(kind=kind, hash_a=ha, hash_b=hb, image_a=first, image_b=second, set_at=utcnow()))
    session.execute(sqlite_insert(DismissedPair).on_conflict_do_nothing(), values)
    return len(values)


def dismissed_pairs(session: Session, kind: str) -> set[tuple[int, int]]:
    """The (a, b) image-id pairs (a < b) of today's photos whose content hashes were dismissed."""
    stored = set(session.execute(
        select(DismissedPair.hash_a, DismissedPair.hash_b).where(DismissedPair.kind == kind)
    ).all())
    if not stored:
        return set()
    hashes = {h for pair in stored for h in pair}
    by_hash: dict[str, list[int]] = {}
    for image_id, h in session.execute(select(Image.id, Image.hash).where(Image.hash.is_not(None))):
        if h is not None and h in hashes:
            by_hash.setdefault(h, []).append(image_id)
    out: set[tuple[int, int]] = set()
    for ha, hb in stored:
        for a in by_hash.get(ha, []):
            for b in by_hash.get(hb, []):
                if a != b:
                    out.add((min(a, b), max(a, b)))
    return out


# -- the removal plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    path: str  # relative to the photo root
    image_id: int
    kept: str  # the path kept in its group
    kind: str
    size: int = -1  # the file as it was indexed: a file that changed since is not this photo any more
    mtime: float = -1.0


def removal_plan(session: Session, groups: list[DuplicateGroup]) -> list[Removal]:
    """What the review says to remove, group by group (a photo in several groups is listed once)."""
    reviewed, rows = review(session, groups)
    plan: dict[int, Removal] = {}
    for r in reviewed:
        kept = next((d.path for d in r.decisions if d.action == KEEP),
                    next(d.path for d in r.decisions if d.image_id == r.suggestion.image_id))
        for d in r.decisions:
            if d.action == REMOVE and d.image_id not in plan:
                row = rows[d.image_id]
                plan[d.image_id] = Removal(d.path, d.image_id, kept, r.group.kind, row.size, row.mtime)
    return list(plan.values())


def why_not_now(removal: Removal, root: Path) -> str | None:
    """Why a planned removal must not go ahead now, or None: the photo its group keeps is no longer
    in the photo folder (it would take the last copy), or the file changed since it was indexed (it
    is not the photo that was judged a copy). A file already gone is no concern here."""
    kept = root / removal.kept
    if not kept.is_file():
        return f"{removal.path}: the photo kept in its group, {removal.kept}, is no longer in the photo folder"
    try:
        st = (root / removal.path).stat()
    except OSError:
        return None
    if removal.size >= 0 and (st.st_size, st.st_mtime) != (removal.size, removal.mtime):
        return f"{removal.path}: changed since it was indexed: run `lookalike index`, then review it again"
    return None


def check_plan(plan: list[Removal], root: Path | None) -> tuple[list[Removal], list[str]]:
    """The removals that may go ahead now, and why each other one may not (`why_not_now`)."""
    if root is None:
        return plan, []
    notes = {r.image_id: why_not_now(r, root) for r in plan}
    return [r for r in plan if notes[r.image_id] is None], [n for n in notes.values() if n is not None]


def plan_csv(plan: list[Removal]) -> str:
    """The removal plan as CSV text: path (relative to the photo root), image_id, kept, kind. A path
    a spreadsheet would read as a formula (=1+2.jpg) starts with an apostrophe (see csv_cells)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "image_id", "kept", "kind"])
    for r in plan:
        w.writerow([safe_cell(r.path), r.image_id, safe_cell(r.kept), r.kind])
    return buf.getvalue()


def move_files(plan: list[Removal], root: Path, target: Path) -> list[str]:
    """Move each planned file from `root` into `target` under its relative path. Never overwrites:
    every destination is checked before anything moves; and a file is moved only while `why_not_now`
    has nothing against it. Returns the paths moved. Raises ReviewError when a destination would lie
    inside the photo root (the next index run would find the moved photos again), when one exists,
    or when a move fails (saying how many moved before it)."""
    root, target = root.resolve(), target.expanduser().resolve()
    todo = [r for r in plan if (root / r.path).is_file()]  # others are gone already (an earlier run)
    inside = target == root or root in target.parents or any(root in (target / r.path).parents for r in todo)
    if inside:  # the photo folder itself, a folder in it, or one above it that puts photos back in it
        raise ReviewError(f"{target} is inside the photo folder {root}, or puts photos back in it: "
                          "choose a folder outside it")
    taken = [target / r.path for r in todo if (target / r.path).exists() or (target / r.path).is_symlink()]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise ReviewError(f"{taken[0]} exists already{more}: not overwriting it; nothing was moved")
    moved: list[str] = []
    for removal in todo:
        path = removal.path
        why = why_not_now(removal, root)  # checked right before the move, not only when planned
        if why is not None:
            log.warning("not moved: %s", why)
            continue
        dst = target / path
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            _move(root / path, dst)
        except OSError as e:
            raise ReviewError(
                f"cannot move {root / path} to {dst}: {e}; {len(moved)} photos were moved to {target} before it"
            ) from None
        log.info("moved %s to %s", root / path, dst)
        moved.append(path)
    return moved


PART_SUFFIX = ".lookalike-part"  # a copy across file systems, until it is whole


def _move(src: Path, dst: Path) -> None:
    """Rename src to dst; across file systems, copy to a partial name, rename that into place, then
    remove src: an interrupted move leaves the photo where it was and no half file under dst's name
    (a leftover partial file is ours, and the next run writes over it)."""
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    part = dst.with_name(dst.name + PART_SUFFIX)
    shutil.copy2(src, part)
    os.replace(part, dst)
    src.unlink()


@dataclass(frozen=True)
class ReviewedGroup:
    group: DuplicateGroup
    suggestion: Suggestion
    decisions: list[Decision]


def review(session: Session, groups: list[DuplicateGroup]) -> tuple[list[ReviewedGroup], dict[int, Image]]:
    """Each group with its keep suggestion and its members' actions; and the rows behind them."""
    rows = rows_of(session, (i for g in groups for i in g.image_ids))
    chosen = choices(session, rows)
    similar = [i for g in groups if g.kind == SIMILAR for i in g.image_ids if i in rows]
    qualities = shot_qualities(session, similar) if similar else {}
    out = []
    for g in groups:
        if not any(i in rows for i in g.image_ids):
            continue  # every member vanished since the groups were computed
        suggestion, decisions = decide(g, rows, chosen, qualities)
        out.append(ReviewedGroup(g, suggestion, decisions))
    return out, rows
