"""The review page: GET /review (HTML) and its JSON endpoints /review/queue, /review/label, /review/undo.

The queue is every stored prediction that abstained or whose voters disagree; a label is a feedback row (the
same validation and storage as POST /feedback), given by the reviewer the bearer token names; undo deletes that
reviewer's newest label. The JSON endpoints need a token with role review (or admin); the page itself carries
no data, so it is served without one and asks for the token in a form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from pipeline.serving.review_page import REVIEW_PAGE_HTML
from pipeline.serving.storage import ApiToken, Database, Feedback, Prediction

__all__ = ["REVIEW_ENDPOINTS", "REVIEW_QUEUE_LIMIT", "LabelRequest", "UndoRequest", "add_review_routes"]

REVIEW_ENDPOINTS = ("/review", "/review/queue", "/review/label", "/review/undo")
"""Paths counted under their own name in the request metrics."""
REVIEW_QUEUE_LIMIT = 500
"""Most items one queue response carries (oldest first)."""
RECENT_FEEDBACK = 15
"""Labels shown in the page's "who labelled what and when" list."""

RecordFeedback = Callable[[str, str, str], Feedback]
"""(prediction_id, label, reviewer) -> the stored row; raises the API's errors for a bad label or id."""


class LabelRequest(BaseModel):
    """POST /review/label: the reviewer is the token's name."""

    model_config = ConfigDict(extra="forbid")
    prediction_id: str = Field(min_length=1, max_length=36)
    label: str = Field(min_length=1, max_length=200)


class UndoRequest(BaseModel):
    """POST /review/undo: an empty JSON object."""

    model_config = ConfigDict(extra="forbid")


def add_review_routes(
    app: FastAPI,
    database: Database,
    labels: Sequence[str],
    reviewer_token: Any,
    record_feedback: RecordFeedback,
    not_found: Callable[[str], Exception],
) -> None:
    """Register the page and its JSON endpoints on `app` (`reviewer_token`: the Depends(...) of role review)."""

    @app.get("/review", response_class=HTMLResponse)
    async def review_page() -> HTMLResponse:
        # No inline script may be injected: data reaches the DOM only through textContent.
        return HTMLResponse(REVIEW_PAGE_HTML, headers={"Cache-Control": "no-store"})

    @app.get("/review/queue")
    async def review_queue(token: ApiToken = reviewer_token) -> Any:
        items = [_item(row, feedback) for row, feedback in database.review_candidates(REVIEW_QUEUE_LIMIT)]
        recent = database.recent_feedback(RECENT_FEEDBACK)
        return {
            "labels": list(labels),
            "reviewer": token.name,
            "items": items,
            "recent": [_feedback(row) for row in recent],
        }

    @app.post("/review/label")
    async def review_label(body: LabelRequest, token: ApiToken = reviewer_token) -> Any:
        return _feedback(record_feedback(body.prediction_id, body.label, token.name))

    @app.post("/review/undo")
    async def review_undo(_: UndoRequest, token: ApiToken = reviewer_token) -> Any:
        row = database.undo_last_feedback(token.name)
        if row is None:
            raise not_found(f"reviewer {token.name!r} has no label to undo")
        return {"undone": _feedback(row)}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _feedback(row: Feedback) -> dict[str, Any]:
    return {
        "feedback_id": row.id,
        "prediction_id": row.prediction_id,
        "label": row.label,
        "reviewer": row.reviewer,
        "at": _iso(row.created_at),
    }


def _item(row: Prediction, feedback: list[Feedback]) -> dict[str, Any]:
    outputs = row.voter_outputs if isinstance(row.voter_outputs, dict) else {}
    voters = [
        {"voter": name, "label": out.get("label"), "confidence": out.get("confidence")}
        for name, out in outputs.items()
        if isinstance(out, dict)
    ]
    return {
        "prediction_id": row.id,
        "text": row.text,
        "prediction": row.prediction,
        "confidence": row.confidence,
        "rule": row.rule,
        "reason": row.reason,
        "abstain_reason": row.abstain_reason,
        "voters": voters,
        "created_at": _iso(row.created_at),
        "feedback": [_feedback(f) for f in feedback],
    }
