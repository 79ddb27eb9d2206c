"""The review queue: items the ensemble abstained on or its voters disagree on most, and the feedback loop.

``mine_review_queue`` ranks items; ``write_review_queue`` writes them as CSV (for a person with a spreadsheet)
and JSONL (for tools), both with an empty ``reviewed_label`` column. A reviewer fills it in; the filled file is
the feedback file, and ``merge_feedback`` joins its labels to the gold set on the next run, each reviewed label
carrying ``review:<reviewer>:<file>`` as its provenance.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from pipeline.data.labelled import LabelledItem
from pipeline.ensemble.arbiter import PassResult
from pipeline.ensemble.voter import VoterOutput
from pipeline.llm.errors import ConfigError

__all__ = [
    "REVIEW_FORMAT_VERSION",
    "FeedbackLabel",
    "ReviewItem",
    "ReviewQueueFiles",
    "disagreement_scores",
    "merge_feedback",
    "mine_review_queue",
    "read_feedback",
    "write_review_queue",
]

REVIEW_FORMAT_VERSION = 1
"""Version of review-queue and feedback rows."""


def disagreement_scores(outputs: Sequence[VoterOutput]) -> np.ndarray:
    """Per item, the generalised Jensen-Shannon divergence of the voting voters' distributions, in [0, 1].

    H(mean p) - mean H(p), divided by log k: 0 when the voters agree exactly (or fewer than two vote), 1 when
    confident voters split evenly. Written here because scipy's ``jensenshannon`` takes only two distributions.
    """
    n, k = outputs[0].proba.shape
    scores = np.zeros(n)
    for i in range(n):
        rows = np.array([o.proba[i] for o in outputs if not o.abstain[i]])
        if len(rows) < 2:
            continue
        clipped = np.clip(rows, 1e-12, 1.0)
        mean = clipped.mean(axis=0)
        entropy_of_mean = -(mean * np.log(mean)).sum()
        mean_entropy = -(clipped * np.log(clipped)).sum(axis=1).mean()
        scores[i] = max(0.0, (entropy_of_mean - mean_entropy) / np.log(k))
    return scores


@dataclass(frozen=True)
class ReviewItem:
    """One row of the review queue; ``reviewed_label`` and ``reviewer`` are for the reviewer to fill."""

    item_id: str
    text: str
    why: str
    """``abstained`` or ``disagreement``, with the arbiter's reason."""
    best_guess: str
    confidence: float
    disagreement: float
    priority: float
    """Sort key, highest first: harm weight of the best guess x (1 + disagreement) for abstentions, harm weight x
    disagreement for settled items."""
    votes: str
    """Each voter's vote, e.g. ``rules=spam classical=ham(0.61)``."""
    reviewed_label: str = ""
    reviewer: str = ""
    format_version: int = REVIEW_FORMAT_VERSION


def mine_review_queue(
    item_ids: Sequence[str],
    texts: Sequence[str],
    outputs: Sequence[VoterOutput],
    decisions: PassResult,
    harm_weights: Mapping[str, float] | None = None,
    top_disagreements: int = 50,
    min_disagreement: float = 0.05,
) -> tuple[ReviewItem, ...]:
    """Every unsettled or abstained item, plus the ``top_disagreements`` settled items voters disagree on most
    (those scoring at least ``min_disagreement``)."""
    weights = harm_weights or {}
    scores = disagreement_scores(outputs)
    by_id = {d.item_id: d for d in decisions.decisions}
    rows: list[ReviewItem] = []
    disagreeing: list[ReviewItem] = []
    for i, item_id in enumerate(item_ids):
        decision = by_id[item_id]
        votes = " ".join(
            f"{o.voter}=-"
            if o.abstain[i]
            else f"{o.voter}={o.labels[int(o.proba[i].argmax())]}({o.proba[i].max():.2f})"
            for o in outputs
        )
        weight = weights.get(decision.best_guess, 1.0)
        score = float(scores[i])
        if not decision.settled:
            why, priority, bucket = f"abstained: {decision.reason}", weight * (1 + score), rows
        elif score >= min_disagreement:
            why, priority, bucket = f"disagreement: {decision.reason}", weight * score, disagreeing
        else:
            continue
        bucket.append(
            ReviewItem(
                item_id=item_id,
                text=texts[i],
                why=why,
                best_guess=decision.best_guess,
                confidence=decision.confidence,
                disagreement=score,
                priority=priority,
                votes=votes,
            )
        )
    disagreeing.sort(key=lambda r: -r.disagreement)
    rows.extend(disagreeing[:top_disagreements])
    rows.sort(key=lambda r: -r.priority)
    return tuple(rows)


@dataclass(frozen=True)
class ReviewQueueFiles:
    """Where a review queue was written."""

    csv: Path
    jsonl: Path
    rows: int


def write_review_queue(
    queue: Sequence[ReviewItem], directory: str | Path, stem: str = "review_queue"
) -> ReviewQueueFiles:
    """Write ``<stem>.csv`` and ``<stem>.jsonl`` (same rows, same columns) into ``directory``."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    columns = [f.name for f in fields(ReviewItem)]
    csv_path, jsonl_path = target / f"{stem}.csv", target / f"{stem}.jsonl"
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in queue:
            writer.writerow(asdict(row))
    jsonl_path.write_text("".join(json.dumps(asdict(row)) + "\n" for row in queue), encoding="utf-8")
    return ReviewQueueFiles(csv_path, jsonl_path, len(queue))


@dataclass(frozen=True)
class FeedbackLabel:
    """A label a reviewer gave, and where it came from."""

    item_id: str
    text: str
    label: str
    reviewer: str
    source_file: str

    @property
    def provenance(self) -> str:
        """``review:<reviewer>:<file name>``: stored as the gold item's source."""
        return f"review:{self.reviewer or 'unknown'}:{Path(self.source_file).name}"


def read_feedback(path: str | Path, labels: Sequence[str]) -> tuple[FeedbackLabel, ...]:
    """Reviewed rows of a filled-in review queue (CSV or JSONL); rows with no ``reviewed_label`` are skipped.

    Raises:
        ConfigError: Unknown format version, a missing column, or a reviewed label that is not a task label.
    """
    source = Path(path)
    if source.suffix == ".jsonl":
        rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with source.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    out: list[FeedbackLabel] = []
    for number, row in enumerate(rows, start=1):
        version = str(row.get("format_version", ""))
        if version != str(REVIEW_FORMAT_VERSION):
            raise ConfigError(
                f"{source} row {number}: format_version {version!r}, expected {REVIEW_FORMAT_VERSION}; "
                f"use a queue written by this version of write_review_queue"
            )
        label = str(row.get("reviewed_label") or "").strip()
        if not label:
            continue
        if label not in labels:
            raise ConfigError(
                f"{source} row {number} (item {row.get('item_id')!r}): reviewed_label {label!r} is not one of "
                f"{list(labels)}; correct it or clear it"
            )
        out.append(
            FeedbackLabel(str(row["item_id"]), str(row["text"]), label, str(row.get("reviewer") or ""), str(source))
        )
    return tuple(out)


def merge_feedback(gold: Sequence[LabelledItem], feedback: Sequence[FeedbackLabel]) -> list[LabelledItem]:
    """Gold items with reviewed labels joined: a reviewed item replaces its gold row (same id) or is appended."""
    reviewed = {f.item_id: f for f in feedback}
    merged = [
        LabelledItem(item.item_id, item.text, reviewed[item.item_id].label, reviewed[item.item_id].provenance)
        if item.item_id in reviewed
        else item
        for item in gold
    ]
    known = {item.item_id for item in gold}
    merged.extend(LabelledItem(f.item_id, f.text, f.label, f.provenance) for f in feedback if f.item_id not in known)
    return merged
