"""Labels and suggestions as the web layer uses them: writes that keep the labeller current."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from flask import abort
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from indexer.schema import ACCEPTED, USER, Image, Label, SuggestedLabel
from search.labelling import labels
from search.labelling.labeller import Suggestion
from search.searcher import NotFound
from web.context import get_session, services

log = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_SOURCES = (USER, ACCEPTED)  # "imported" belongs to the importers
MAX_BATCH = 1000


def rows_by_id(session: Session, ids: Iterable[int]) -> dict[int, Image]:
    ids = list(set(ids))
    if not ids:
        return {}
    stmt = select(Image).where(Image.id.in_(ids)).options(selectinload(Image.label))
    return {row.id: row for row in session.scalars(stmt)}


def clean_label(raw: object) -> str:
    """A label as the search layer accepts it (1..100 printable characters, stripped).

    :raise 400: anything else.
    """
    try:
        return labels.clean_label(raw)  # type: ignore[arg-type]
    except ValueError as e:
        abort(400, description=str(e))


def label_images(image_ids: list[int], label: str, source: str = USER,
                 after: Callable[[], T] | None = None) -> T | None:
    """Set one label on these images in one transaction, then refresh the dependent suggestions;
    `after()`'s result, called before another write can come in (a response of what this request
    wrote, not of a later request's label).

    :raise 400: a label the search layer refuses. :raise 404: an unknown id (nothing is changed).
    """
    if source not in WRITE_SOURCES:
        abort(400, description=f"source must be one of {', '.join(WRITE_SOURCES)}")
    svc = services()
    session = get_session()
    with svc.write_lock:
        try:
            for image_id in image_ids:
                labels.set_label(session, image_id, label, source=source)
            session.commit()
            session.expire_all()  # rows this request loaded before now show the new labels
        except NotFound as e:
            session.rollback()
            abort(404, description=_not_found_message(e))
        except ValueError as e:
            session.rollback()
            abort(400, description=str(e))
        except BaseException:
            session.rollback()
            raise
        result = after() if after is not None else None
        _after_label_change(image_ids)
    return result


def unlabel_image(image_id: int) -> None:
    """Remove the label of an existing image (the caller checked that it exists)."""
    svc = services()
    session = get_session()
    with svc.write_lock:
        try:
            labels.clear_label(session, image_id)
            session.commit()
            session.expire_all()
        except BaseException:
            session.rollback()
            raise
        _after_label_change([image_id])


def _after_label_change(image_ids: list[int]) -> None:
    """Re-vote the neighbours of relabelled images. The labels are committed by now: a failure
    here is logged, never answered as a failed write (the next read redoes every suggestion,
    since the labels no longer match those they were made from)."""
    labeller = services().labeller
    try:
        for image_id in image_ids:
            labeller.on_label_changed(image_id)
    except Exception:
        log.exception("labels of %s saved, but re-voting their neighbours failed", image_ids)


def _not_found_message(e: NotFound) -> str:
    return str(e) or "no such image"


def suggestion_for(image_id: int) -> Suggestion | None:
    try:
        return services().labeller.suggest(image_id)
    except NotFound:
        return None


def suggested_for(label: str) -> Select:
    """The ids of unlabelled images whose current suggestion is `label`, as a subquery."""
    services().labeller.refresh()  # cheap when the stored votes are current
    return (
        select(SuggestedLabel.image_id)
        .where(SuggestedLabel.label == label)
        .where(SuggestedLabel.image_id.not_in(select(Label.image_id)))
    )


def label_version(session: Session) -> tuple:
    """Changes whenever any label does (from this process or another): a cache key."""
    return tuple(session.execute(select(func.count(Label.image_id), func.max(Label.set_at))).one())


def learning_state() -> dict | None:
    """What the learned head measured and whether it is current (None before its first training).

    A stale head is queued for retraining in the background; this never waits for it.
    """
    labeller = services().labeller
    facts = labeller.facts()
    if (facts is None or not facts["current"]) and labeller.trainer is not None:
        labeller.trainer.request()
    return facts
