"""What the Duplicates page and its API show and change: tiers of groups, keep suggestions, choices,
dismissals. The slow part (candidate search and verification) is computed once per index state."""

from __future__ import annotations

from collections.abc import Mapping

from flask import abort, current_app

from search.duplicates import review
from search.duplicates.candidates import (
    COPIES,
    KINDS,
    SIMILAR,
    SIMILAR_THRESHOLD,
    Pair,
    Tiers,
    check_similar_threshold,
    find_tiers,
    groups_of,
)
from web.context import get_session, in_background, services
from web.ids import is_id
from web.media import get_image
from web.payloads import image_payload

MAX_GROUPS = 500
# Photos listed per group: thousands of similar shots make one group, whose every tile and pair
# would be one response and one page. The rest are counted ("size", "truncated"), not listed.
MAX_GROUP_MEMBERS = 100
DUPLICATES_WAIT = 5.0  # seconds a request waits for the tiers; then the page shows progress


def kind_arg(args: Mapping[str, str]) -> str:
    """?kind= as a tier; copies when not given. :raise 400: an unknown tier."""
    kind = args.get("kind") or COPIES
    if kind not in KINDS:
        abort(400, description=f"kind must be one of {', '.join(KINDS)}")
    return kind


def threshold_arg(args: Mapping[str, str]) -> float:
    """?threshold= as the similar tier's cosine in (0, 1]. :raise 400: not a number in range."""
    raw = args.get("threshold")
    if raw in (None, ""):
        return SIMILAR_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        abort(400, description="threshold must be a number")
    try:
        return check_similar_threshold(value)
    except ValueError as e:
        abort(400, description=str(e))


def _signals_key() -> tuple:
    # `lookalike index` may add signals to older photos without touching any vector.
    from sqlalchemy import func, select

    from indexer.schema import ImageSignalsRow

    return tuple(get_session().execute(
        select(func.count(), func.sum(ImageSignalsRow.image_id), func.sum(ImageSignalsRow.version))
    ).one())


class Pending(Exception):
    """The tiers are still being computed: `done` of `total` candidate pairs checked so far."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"finding duplicates: {done} of {total} candidate pairs checked")
        self.done, self.total = done, total


def tiers(threshold: float, kind: str = SIMILAR) -> Tiers:
    """Both tiers' pairs, computed once per state of the vectors and signals, in a background thread
    (verification reads the signals stored at index time). The copies tier does not depend on the
    similar tier's threshold: for `kind` copies, the last tiers found for this state serve, whatever
    threshold they were found with. :raise Pending: not ready after the app's DUPLICATES_WAIT seconds."""
    svc = services()
    state = (tuple(svc.library.vectors_fingerprint()), _signals_key())
    last = svc.jobs.get("duplicate-tiers")
    if (kind == COPIES and last is not None and last.finished.is_set() and last.error is None
            and last.key[1:] == state):
        return last.value
    key = (threshold, *state)
    job = in_background(svc, "duplicate-tiers", key,
                        lambda progress: find_tiers(svc.library, similar_threshold=threshold, progress=progress),
                        wait=current_app.config["DUPLICATES_WAIT"])
    if job.key != key or not job.finished.is_set():
        raise Pending(job.done if job.key == key else 0, job.total if job.key == key else 0)
    if job.error is not None:
        raise job.error
    return job.value


def _pair(p: Pair) -> dict:
    return {
        "a": p.a, "b": p.b, "score": None if p.score != p.score else round(p.score, 4),
        "hash_distance": p.hash_distance, "inliers": p.inliers, "why": p.why,
    }


def listed_members(image_ids: list[int], suggested: int) -> list[int]:
    """The members a group lists: the first MAX_GROUP_MEMBERS in the group's order (ascending ids),
    the suggested keep always among them (in place of the last), so the page shows what to keep."""
    shown = image_ids[:MAX_GROUP_MEMBERS]
    if suggested in shown or suggested not in image_ids:
        return shown
    return sorted([*shown[:-1], suggested])


def duplicate_groups(kind: str, threshold: float) -> dict:
    """One tier's groups, largest first, each with its members, pair evidence and keep suggestion;
    while they are being computed, {"pending": {"done", "total"}} and no groups.

    A group lists at most MAX_GROUP_MEMBERS photos (`listed_members`) and the pairs among them; its
    "size" counts them all and "truncated" says some are not listed. Its keep suggestion and
    best score are still the whole group's, as the removal CSV's plan is."""
    try:
        found = tiers(threshold, kind)
    except Pending as p:
        return {"kind": kind, "threshold": threshold, "missing_signals": None, "groups": [],
                "pending": {"done": p.done, "total": p.total}}
    session = get_session()
    groups = groups_of(found, kind, review.dismissed_pairs(session, kind))[:MAX_GROUPS]
    reviewed, rows = review.review(session, groups)
    out = []
    for r in reviewed:
        actions = {d.image_id: d for d in r.decisions}
        present = [i for i in r.group.image_ids if i in rows]
        shown = listed_members(present, r.suggestion.image_id)
        members = []
        for i in shown:
            item = image_payload(rows[i])
            item.update(action=actions[i].action, chosen=actions[i].chosen, suggested=i == r.suggestion.image_id)
            members.append(item)
        listed = set(shown)
        pairs = [_pair(p) for p in r.group.pairs if p.a in listed and p.b in listed]
        scores = [p.score for p in r.group.pairs if p.score == p.score]
        out.append({
            "kind": kind, "images": members, "pairs": pairs,
            "best_score": round(max(scores), 4) if scores else None,
            "keep": {"image_id": r.suggestion.image_id, "reason": r.suggestion.reason},
            "size": len(present), "truncated": len(shown) < len(present),
        })
    return {"kind": kind, "threshold": threshold, "missing_signals": found.missing_signals, "groups": out}


def dismiss(image_ids: object, kind: object) -> int:
    """:raise 400: not a list of ids, or a tier or group review refuses. :raise 404: an unknown id."""
    if not isinstance(image_ids, list) or not all(is_id(i) for i in image_ids):
        abort(400, description="image_ids must be a list of integers")
    if kind not in KINDS:
        abort(400, description=f"kind must be one of {', '.join(KINDS)}")
    svc = services()
    session = get_session()
    with svc.write_lock:
        try:
            n = review.dismiss(session, image_ids, str(kind))
            session.commit()
        except review.ReviewError as e:
            session.rollback()
            abort(404 if str(e).startswith("no indexed image") else 400, description=str(e))
    return n


def set_choice(image_id: int, choice: object) -> None:
    """:raise 400: not keep, remove or null. :raise 404: an unknown id."""
    get_image(image_id)
    if choice is not None and choice not in review.CHOICES:
        abort(400, description="choice must be \"keep\", \"remove\" or null")
    svc = services()
    session = get_session()
    with svc.write_lock:
        try:
            review.set_choice(session, image_id, choice)
            session.commit()
        except review.ReviewError as e:
            session.rollback()
            abort(404, description=str(e))


def removal_csv(kind: str, threshold: float) -> str:
    session = get_session()
    groups = groups_of(tiers(threshold, kind), kind, review.dismissed_pairs(session, kind))
    plan, _ = review.check_plan(review.removal_plan(session, groups), services().library.root)
    return review.plan_csv(plan)
