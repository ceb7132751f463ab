"""Browsing the collection: filters and sort parsed from a query string, one page of rows, counts."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload
from werkzeug.exceptions import BadRequest

from indexer.schema import FAILED, INDEXED, PENDING, Image, Label

PER_PAGE = 60
MAX_PER_PAGE = 200  # microblog caps per_page at 100; thumbnails are small
SORTS = ("taken", "path", "added")
STATUSES = (INDEXED, FAILED, PENDING)


@dataclass(frozen=True)
class Filters:
    """What the browse page and GET /api/images accept. Empty strings mean 'not given'."""

    folder: str | None = None  # this folder and the folders under it
    label: str | None = None
    suggested: str | None = None  # unlabelled images whose k-NN suggestion is this label
    unlabelled: bool = False
    status: str | None = None  # indexed, failed or pending
    date_from: date | None = None  # capture date, inclusive
    date_to: date | None = None
    sort: str = "taken"
    order: str = "desc"
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Filters:
        """Raises BadRequest (400) naming the parameter that does not parse."""
        sort = args.get("sort") or "taken"
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
        order = args.get("order") or ("asc" if sort == "path" else "desc")
        if order not in ("asc", "desc"):
            raise BadRequest("order must be asc or desc")
        status = args.get("status") or None
        if args.get("failed") in ("1", "true", "on"):
            status = FAILED
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        return cls(
            folder=args.get("folder") or None,
            label=_label_arg(args, "label"),
            suggested=_label_arg(args, "suggested"),
            unlabelled=args.get("unlabelled") in ("1", "true", "on"),
            status=status,
            date_from=_date(args, "from"),
            date_to=_date(args, "to"),
            sort=sort,
            order=order,
            page=int_arg(args, "page", 1, lo=1, hi=10**9),
            per_page=int_arg(args, "per_page", PER_PAGE, lo=1, hi=MAX_PER_PAGE),
        )

    def to_args(self, **changes: Any) -> dict[str, str]:
        """The query string of these filters (with changes), without defaults: for links."""
        f = replace(self, **changes)
        out = {
            "folder": f.folder, "label": f.label, "suggested": f.suggested,
            "unlabelled": "1" if f.unlabelled else None, "status": f.status,
            "from": f.date_from.isoformat() if f.date_from else None,
            "to": f.date_to.isoformat() if f.date_to else None,
            "sort": f.sort if f.sort != "taken" else None,
            "order": f.order if f.order != ("asc" if f.sort == "path" else "desc") else None,
            "page": str(f.page) if f.page != 1 else None,
            "per_page": str(f.per_page) if f.per_page != PER_PAGE else None,
        }
        return {k: v for k, v in out.items() if v}

    @property
    def active(self) -> bool:
        return any((self.folder, self.label, self.suggested, self.unlabelled, self.status,
                    self.date_from, self.date_to))


def int_arg(args: Mapping[str, str], name: str, default: int, *, lo: int, hi: int) -> int:
    """An integer query parameter, clamped to [lo, hi]; BadRequest if it is not an integer."""
    raw = args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    return max(lo, min(hi, value))


def _label_arg(args: Mapping[str, str], name: str) -> str | None:
    """A label filter as labels are stored (NFC, stripped: search.labelling.labels.clean_label), so
    that "café" typed decomposed, or " hat", finds what a PUT of it stored."""
    value = unicodedata.normalize("NFC", args.get(name) or "").strip()
    return value or None


def _date(args: Mapping[str, str], name: str) -> date | None:
    raw = args.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date, YYYY-MM-DD") from None


@dataclass(frozen=True)
class BrowsePage:
    rows: list[Image]
    total: int
    filters: Filters

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.filters.per_page))


def filtered(stmt: Select, f: Filters, suggested: Select | None) -> Select:
    if f.folder:
        # A range, not LIKE: both halves of the OR search the folder index ('0' follows '/').
        stmt = stmt.where(
            (Image.folder == f.folder) | ((Image.folder >= f.folder + "/") & (Image.folder < f.folder + "0"))
        )
    if f.label:
        stmt = stmt.where(Image.id.in_(select(Label.image_id).where(Label.label == f.label)))
    if f.unlabelled:
        stmt = stmt.where(Image.id.not_in(select(Label.image_id)))
    if f.suggested:
        if suggested is None:
            raise ValueError("filtering by suggested label needs the suggestions' subquery")
        stmt = stmt.where(Image.id.in_(suggested))
    if f.status:
        stmt = stmt.where(Image.status == f.status)
    if f.date_from:
        stmt = stmt.where(Image.taken_at >= datetime.combine(f.date_from, time.min))
    if f.date_to == date.max:  # 9999-12-31 has no next day to stop before: every dated photo
        stmt = stmt.where(Image.taken_at.is_not(None))
    elif f.date_to:
        stmt = stmt.where(Image.taken_at < datetime.combine(f.date_to + timedelta(days=1), time.min))
    return stmt


def browse(session: Session, f: Filters, suggested: Select | None = None) -> BrowsePage:
    """One page of images matching `f`, in its order, labels loaded.

    `suggested`: a select of the image ids whose suggestion is `f.suggested` (the labeller owns
    the suggestions; this module only filters by them).
    """
    total = session.scalar(filtered(select(func.count(Image.id)), f, suggested)) or 0
    column = {"taken": Image.taken_at, "path": Image.path, "added": Image.added_at}[f.sort]
    direction = column.asc() if f.order == "asc" else column.desc()
    stmt = (
        filtered(select(Image), f, suggested)
        .options(selectinload(Image.label))
        .order_by(column.is_(None), direction, Image.path, Image.id)  # undated photos last
        .limit(f.per_page)
        .offset((f.page - 1) * f.per_page)
    )
    return BrowsePage(list(session.scalars(stmt)), total, f)


@dataclass(frozen=True)
class Facets:
    """Counts shown beside the filters."""

    images: int
    by_status: dict[str, int]
    labelled: int
    labels: list[tuple[str, int]]  # most frequent first
    folders: list[tuple[str, int]]  # by name, at most MAX_FOLDERS

    @property
    def unlabelled(self) -> int:
        return self.images - self.labelled


MAX_FOLDERS = 1000


def known_labels(session: Session) -> list[str]:
    """Every label in use, most frequent first: what label inputs offer."""
    return list(session.scalars(
        select(Label.label).group_by(Label.label).order_by(func.count().desc(), Label.label)
    ))


def facets(session: Session) -> Facets:
    by_status = dict(session.execute(select(Image.status, func.count()).group_by(Image.status)).all())
    labels = session.execute(
        select(Label.label, func.count()).group_by(Label.label).order_by(func.count().desc(), Label.label)
    ).all()
    folders = session.execute(
        select(Image.folder, func.count()).group_by(Image.folder).order_by(Image.folder).limit(MAX_FOLDERS)
    ).all()
    return Facets(
        images=sum(by_status.values()),
        by_status=by_status,
        labelled=sum(n for _, n in labels),
        labels=[(name, n) for name, n in labels],
        folders=[(name, n) for name, n in folders],
    )
