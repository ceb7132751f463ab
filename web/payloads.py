"""The JSON shapes of the API: an image, a scored result, a suggestion, a duplicate group."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from urllib.parse import quote

from flask import g, url_for

from indexer.schema import INDEXED, Image
from search.labelling.labeller import Suggestion
from search.searcher import ImageRow
from web.thumbs import version_of


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


_ID = 2_147_483_647  # a placeholder id: URLs are built once per request, then filled in per row


def _url_patterns() -> dict[str, str]:
    """The routes' URLs with a placeholder id, built once per request (url_for costs ~50 µs)."""
    patterns = g.get("lookalike_url_patterns")
    if patterns is None:
        patterns = g.lookalike_url_patterns = {
            "page_url": url_for("pages.image", image_id=_ID),
            "thumb_url": url_for("media.thumb", image_id=_ID, size="small"),
            "large_url": url_for("media.thumb", image_id=_ID, size="large"),
            "original_url": url_for("media.original", image_id=_ID),
        }
    return patterns


def image_urls(row: Image | ImageRow) -> dict[str, str | None]:
    version = quote(version_of(row), safe="")
    shown = row.status != "failed"
    urls: dict[str, str | None] = {key: url.replace(str(_ID), str(row.id)) for key, url in _url_patterns().items()}
    for key in ("thumb_url", "large_url"):
        urls[key] = f"{urls[key]}?v={version}" if shown else None
    return urls


def image_payload(row: Image | ImageRow) -> dict:
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


def result_payload(row: Image | ImageRow, score: float) -> dict:
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
