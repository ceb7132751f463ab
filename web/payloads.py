"""The JSON shapes of the API: an image, a scored result, a suggestion, a duplicate group."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from flask import url_for

from indexer.schema import INDEXED, Image
from search.knn import Suggestion
from web.thumbs import version_of


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def image_urls(row: Image) -> dict[str, str | None]:
    version = version_of(row)
    shown = row.status != "failed"
    return {
        "page_url": url_for("pages.image", image_id=row.id),
        "thumb_url": url_for("media.thumb", image_id=row.id, size="small", v=version) if shown else None,
        "large_url": url_for("media.thumb", image_id=row.id, size="large", v=version) if shown else None,
        "original_url": url_for("media.original", image_id=row.id),
    }


def image_payload(row: Image) -> dict:
    label = row.label
    return {
        "id": row.id,
        "path": row.path,
        "name": row.path.rsplit("/", 1)[-1],
        "folder": row.folder,
        "size": row.size,
        "width": row.width,
        "height": row.height,
        "format": row.format,
        "taken_at": _iso(row.taken_at),
        "camera": row.camera,
        "added_at": _iso(row.added_at),
        "status": row.status,
        "searchable": row.status == INDEXED,
        "error": row.error,
        "label": (
            {"label": label.label, "source": label.source, "set_at": _iso(label.set_at)}
            if label is not None else None
        ),
        **image_urls(row),
    }


def result_payload(row: Image, score: float) -> dict:
    return {"score": round(float(score), 4), "image": image_payload(row)}


def suggestion_payload(s: Suggestion | None, rows: dict[int, Image] | None = None) -> dict | None:
    """A suggestion and the k neighbours behind it (label null: unlabelled, did not vote).

    None when there is no suggestion: no labelled neighbour voted. `rows` adds thumbnails.
    """
    if s is None or s.label is None:
        return None
    rows = rows or {}
    evidence = []
    for e in s.evidence:
        item = {"image_id": e.image_id, "score": round(float(e.score), 4), "label": e.label}
        row = rows.get(e.image_id)
        if row is not None:
            item.update(path=row.path, **image_urls(row))
        evidence.append(item)
    return {
        "image_id": s.image_id,
        "label": s.label,
        "confidence": round(float(s.confidence), 4),
        "margin": round(float(s.margin), 4),
        "evidence": evidence,
    }


def evidence_ids(suggestions: Iterable[Suggestion | None]) -> set[int]:
    return {e.image_id for s in suggestions if s is not None and s.label is not None for e in s.evidence}
