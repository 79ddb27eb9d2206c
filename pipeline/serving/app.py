"""The prediction API (FastAPI): /predict, /predict/batch, /feedback, /healthz, /metrics, and /review.

Every request but /healthz and /metrics carries a bearer token (401 without a valid one, 403 when its role may
not call the endpoint) and spends from that token's rate limit (429 with Retry-After). Bodies over the size
limit get 413 before they are parsed, a text over the text limit 413, a malformed body 422 naming the field,
a database that does not answer 503; no response ever carries a stack trace. A prediction is committed to the
database before it is acknowledged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text as sql_text
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.serving.limits import RateLimiter
from pipeline.serving.predictor import Answer, Predictor
from pipeline.serving.review import REVIEW_ENDPOINTS, add_review_routes
from pipeline.serving.storage import ApiToken, Database, Feedback, Prediction, input_hash, new_prediction_id

__all__ = ["ApiError", "ServeSettings", "create_app"]

log = logging.getLogger("assay.serve")


@dataclass(frozen=True)
class ServeSettings:
    """Limits of the API."""

    max_body_bytes: int = 1_000_000
    max_text_chars: int = 20_000
    max_batch: int = 64
    rate_per_minute: float = 600.0
    rate_burst: float | None = None


class ApiError(Exception):
    """An error answered as JSON {"error", "kind"} with `status` (and headers); counted by kind."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


class PredictRequest(BaseModel):
    """POST /predict."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)


class BatchRequest(BaseModel):
    """POST /predict/batch."""

    model_config = ConfigDict(extra="forbid")
    texts: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class FeedbackRequest(BaseModel):
    """POST /feedback."""

    model_config = ConfigDict(extra="forbid")
    prediction_id: str = Field(min_length=1, max_length=36)
    label: str = Field(min_length=1, max_length=200)
    reviewer: str | None = Field(default=None, max_length=200)


@dataclass(frozen=True)
class _Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    predictions: Counter
    abstentions: Counter
    llm_calls: Counter
    llm_cost: Counter
    errors: Counter

    @classmethod
    def create(cls) -> _Metrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter("assay_requests", "HTTP requests", ["endpoint", "status"], registry=registry),
            Histogram(
                "assay_request_latency_seconds",
                "Request latency",
                ["endpoint"],
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
                registry=registry,
            ),
            Counter("assay_predictions", "Texts answered", ["rule"], registry=registry),
            Counter("assay_abstentions", "Texts abstained on", registry=registry),
            Counter("assay_llm_calls", "Texts sent to the LLM tier", registry=registry),
            Counter("assay_llm_cost_usd", "Cost of the LLM tier", registry=registry),
            Counter("assay_errors", "Error responses by kind", ["kind"], registry=registry),
        )


def create_app(predictor: Predictor, database: Database, settings: ServeSettings | None = None) -> FastAPI:
    """The API over a loaded artifact and an upgraded database."""
    limits = settings or ServeSettings()
    metrics = _Metrics.create()
    limiter = RateLimiter(limits.rate_per_minute, limits.rate_burst)
    app = FastAPI(title="Assay", docs_url=None, redoc_url=None, openapi_url=None)
    labels = set(predictor.artifact.bundle.task.label_names)

    def error_response(error: ApiError) -> JSONResponse:
        metrics.errors.labels(error.kind).inc()
        return JSONResponse({"error": error.message, "kind": error.kind}, error.status, headers=error.headers)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        endpoint = request.url.path if request.url.path in _ENDPOINTS else "other"
        refused = _precheck(request, limits)
        response: Response
        if refused is not None:
            metrics.errors.labels(_KIND_OF_STATUS.get(refused.status_code, "error")).inc()
            response = refused
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # noqa: BLE001 - never let a stack trace reach a client
                response = _internal(exc)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    def _internal(exc: Exception) -> JSONResponse:
        if isinstance(exc, SQLAlchemyError):
            log.warning("database unavailable: %s", type(exc).__name__)
            return error_response(
                ApiError(503, "database", "the database is unavailable; retry later", {"Retry-After": "5"})
            )
        log.exception("internal error")
        return error_response(ApiError(500, "internal", "internal error"))

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            location = [str(part) for part in error.get("loc", ()) if part != "body"]
            field = ".".join(location) or "body"
            problems.append({"field": field, "message": str(error.get("msg", "invalid"))})
        fields = ", ".join(p["field"] for p in problems)
        metrics.errors.labels("validation").inc()
        return JSONResponse({"error": f"invalid request: {fields}", "kind": "validation", "fields": problems}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "http"
        return error_response(ApiError(exc.status_code, kind, str(exc.detail)))

    @app.exception_handler(SQLAlchemyError)
    async def on_database(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        return _internal(exc)

    @app.exception_handler(Exception)
    async def on_exception(_: Request, exc: Exception) -> JSONResponse:
        return _internal(exc)

    def authorize(*roles: str) -> Callable[[Request], ApiToken]:
        def dependency(request: Request) -> ApiToken:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            row = database.check_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
            if row is None:
                raise ApiError(401, "auth", "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
            if row.role != "admin" and row.role not in roles:
                raise ApiError(403, "forbidden", f"token role {row.role!r} may not call this; needs {list(roles)}")
            wait = limiter.acquire(row.id)
            if wait > 0:
                raise ApiError(429, "rate_limit", "rate limit exceeded", {"Retry-After": str(max(1, math.ceil(wait)))})
            return row

        return dependency

    async def answer(texts: list[str], token: ApiToken) -> list[dict[str, Any]]:
        too_long = [i for i, t in enumerate(texts) if len(t) > limits.max_text_chars]
        if too_long:
            raise ApiError(413, "too_large", f"text {too_long[0]} has more than {limits.max_text_chars} characters")
        if any(not t.strip() for t in texts):
            raise RequestValidationError([{"loc": ("body", "text"), "msg": "text is blank", "type": "value_error"}])
        answers = await predictor.predict(texts)
        rows = [_row(text, a, predictor.version, token.id) for text, a in zip(texts, answers, strict=True)]
        database.add_predictions(rows)  # committed before the client hears of it
        for a in answers:
            metrics.predictions.labels(a.rule).inc()
            metrics.abstentions.inc(a.prediction == "ABSTAIN")
            metrics.llm_calls.inc(a.llm_called)
            metrics.llm_cost.inc(a.llm_cost_usd)
            if a.abstain_reason and "did not answer within" in a.abstain_reason:
                metrics.errors.labels("llm_timeout").inc()
            elif a.abstain_reason and "LLM tier failed" in a.abstain_reason:
                metrics.errors.labels("llm_error").inc()
        return [_body(row, a) for row, a in zip(rows, answers, strict=True)]

    # Defaults, not Annotated: these closures are not module globals, where postponed annotations resolve.
    predictor_token = Depends(authorize("predict"))
    reviewer_token = Depends(authorize("review"))

    @app.post("/predict")
    async def predict(body: PredictRequest, token: ApiToken = predictor_token) -> Any:
        return (await answer([body.text], token))[0]

    @app.post("/predict/batch")
    async def predict_batch(body: BatchRequest, token: ApiToken = predictor_token) -> Any:
        if len(body.texts) > limits.max_batch:
            raise ApiError(413, "too_large", f"{len(body.texts)} texts; at most {limits.max_batch} per batch")
        return {"results": await answer(body.texts, token)}

    def record_feedback(prediction_id: str, label: str, reviewer: str) -> Feedback:
        if label not in labels:
            raise RequestValidationError(
                [{"loc": ("body", "label"), "msg": f"expected one of {sorted(labels)}", "type": "value_error"}]
            )
        row = database.add_feedback(prediction_id, label, reviewer)
        if row is None:
            raise ApiError(404, "not_found", f"no prediction {prediction_id!r}")
        return row

    @app.post("/feedback")
    async def feedback(body: FeedbackRequest, token: ApiToken = reviewer_token) -> Any:
        row = record_feedback(body.prediction_id, body.label, body.reviewer or token.name)
        return {"feedback_id": row.id, "prediction_id": row.prediction_id, "label": row.label, "reviewer": row.reviewer}

    @app.get("/healthz")
    async def healthz() -> Any:
        with database.engine.connect() as connection:
            connection.execute(sql_text("SELECT 1"))
        manifest = predictor.artifact.manifest
        return {"status": "ok", "model_version": manifest.version, "experiment": manifest.experiment}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_review_routes(
        app,
        database,
        predictor.artifact.bundle.task.label_names,
        reviewer_token,
        record_feedback,
        lambda message: ApiError(404, "not_found", message),
    )
    return app


_ENDPOINTS = {"/predict", "/predict/batch", "/feedback", "/healthz", "/metrics", *REVIEW_ENDPOINTS}
_KIND_OF_STATUS = {413: "too_large", 415: "content_type"}


def _precheck(request: Request, limits: ServeSettings) -> JSONResponse | None:
    """413 for a declared body over the limit, 415 for a POST that is not JSON: before anything is read."""
    if request.method != "POST":
        return None
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        return JSONResponse(
            {"error": f"body of {declared} bytes; at most {limits.max_body_bytes}", "kind": "too_large"}, 413
        )
    if declared is None and request.headers.get("transfer-encoding", "").lower() == "chunked":
        return JSONResponse({"error": "send a Content-Length (chunked bodies are refused)", "kind": "too_large"}, 411)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return JSONResponse(
            {"error": f"content type {content_type or 'none'!r}; send application/json", "kind": "content_type"}, 415
        )
    return None


def _row(text: str, answer: Answer, version: str, token_id: str) -> Prediction:
    return Prediction(
        id=new_prediction_id(),
        input_hash=input_hash(text),
        text=text,
        prediction=answer.prediction,
        confidence=answer.confidence,
        rule=answer.rule,
        reason=answer.reason,
        abstain_reason=answer.abstain_reason,
        voter_outputs=answer.voter_outputs,
        latency_ms=answer.latency_ms,
        model_version=version,
        token_id=token_id,
    )


def _body(row: Prediction, answer: Answer) -> dict[str, Any]:
    return {
        "prediction_id": row.id,
        "prediction": answer.prediction,
        "confidence": answer.confidence,
        "voter_outputs": answer.voter_outputs,
        "rule": answer.rule,
        "reason": answer.reason,
        "abstain_reason": answer.abstain_reason,
        "latency_ms": round(answer.latency_ms, 3),
        "model_version": row.model_version,
    }
