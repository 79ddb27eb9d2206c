"""The arbiter cascade: safety rules, then consensus, then stacking + split-conformal abstention, then the LLM.

First pass (cheap voters only), per item:

1. **safety**: a ``force`` safety rule settles the item with its label; an ``escalate`` rule leaves it unsettled.
2. **consensus**: every voting cheap voter names the same label and at least ``consensus_min_voters`` of them
   give it ``consensus_confidence`` or more: settled, no stacking, no LLM call.
3. **conformal**: a meta-learner (logistic regression, trained on out-of-fold voter probabilities so it learns
   how voters behave on texts they were not trained on) combines the voters; its probabilities go through
   split-conformal prediction sets calibrated on the calibration items that reach this tier. A single-label set
   settles the item; an empty or larger set leaves it unsettled.

:func:`unsettled_items` lists what the LLM voter's call stage is planned from; :meth:`Arbiter.final_pass` merges
the LLM's answers: a confident answer inside the conformal set settles the item, anything else abstains (to
the review queue).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.data.labelled import LabelledItem
from pipeline.ensemble.conformal import ConformalThresholds, calibrate_conformal, prediction_sets
from pipeline.ensemble.metrics import label_indices
from pipeline.ensemble.task_config import ArbiterConfig
from pipeline.ensemble.voter import TrainedVoter, Voter, VoterOutput

__all__ = [
    "DECISIONS_FORMAT_VERSION",
    "Arbiter",
    "Decision",
    "PassResult",
    "Stacker",
    "Tier",
    "fit_stacker",
    "out_of_fold_outputs",
    "predict_outputs",
    "read_pass",
    "unsettled_items",
    "write_pass",
]

DECISIONS_FORMAT_VERSION = 1
"""Version of the JSONL records written by :func:`write_pass`."""

Tier = Literal["safety", "consensus", "conformal", "llm", "unsettled", "abstain"]
"""Which tier decided: ``unsettled`` (first pass: awaits the LLM) and ``abstain`` (final: to review) decide nothing."""


@dataclass(frozen=True)
class Decision:
    """The arbiter's verdict on one item."""

    item_id: str
    settled: bool
    label: str | None
    """The decided label; None when not settled."""
    tier: Tier
    reason: str
    """Why, in one line (the rule, the agreeing voters, the conformal set, the LLM's answer)."""
    best_guess: str
    """The stacker's most probable label, even when not settled (for review and for scoring without the LLM)."""
    confidence: float
    """Probability of ``best_guess`` under the stacker (or the consensus voters' smallest confidence)."""
    prediction_set: tuple[str, ...] = ()
    """The conformal set, when the item reached that tier."""


@dataclass(frozen=True)
class PassResult:
    """All decisions of one pass over a batch of items."""

    labels: tuple[str, ...]
    decisions: tuple[Decision, ...]
    stage: Literal["first", "final"]
    format_version: int = DECISIONS_FORMAT_VERSION

    def settled_share(self) -> float:
        """Share of items settled."""
        return sum(d.settled for d in self.decisions) / len(self.decisions) if self.decisions else 0.0


def unsettled_items(first_pass: PassResult) -> tuple[str, ...]:
    """Ids of the items the cheap tiers left unsettled: the LLM voter's call stage is planned from these."""
    return tuple(d.item_id for d in first_pass.decisions if not d.settled)


def write_pass(result: PassResult, path: str | Path) -> Path:
    """Write a pass as JSONL: a header line (format_version, labels, stage), then one line per decision."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"format_version": result.format_version, "labels": list(result.labels), "stage": result.stage})
    ]
    lines += [json.dumps(asdict(d)) for d in result.decisions]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def read_pass(path: str | Path) -> PassResult:
    """Read a pass written by :func:`write_pass`."""
    source = Path(path)
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows or rows[0].get("format_version") != DECISIONS_FORMAT_VERSION:
        found = rows[0].get("format_version") if rows else None
        raise ValueError(
            f"{source}: format_version {found!r}, this code reads {DECISIONS_FORMAT_VERSION}; rerun the arbiter"
        )
    header = rows[0]
    decisions = tuple(Decision(**{**row, "prediction_set": tuple(row["prediction_set"])}) for row in rows[1:])
    return PassResult(tuple(header["labels"]), decisions, header["stage"])


def _features(outputs: Sequence[VoterOutput]) -> np.ndarray:
    # Log-probabilities separate 0.99 from 0.999 (which matters for abstention); the flag tells the
    # meta-learner when a row is only a placeholder uniform distribution.
    columns: list[np.ndarray] = []
    for out in outputs:
        columns.append(np.log(np.clip(out.proba, 1e-4, 1.0)))
        columns.append(out.abstain.astype(float)[:, None])
    return np.hstack(columns)


@dataclass(frozen=True)
class Stacker:
    """Logistic-regression meta-learner over the voters' (log-)probabilities and abstain flags."""

    labels: tuple[str, ...]
    voters: tuple[str, ...]
    """Voter names in feature order; predict needs outputs in this order."""
    model: Any

    def predict_proba(self, outputs: Sequence[VoterOutput]) -> np.ndarray:
        """Combined probabilities (n, k)."""
        names = tuple(o.voter for o in outputs)
        if names != self.voters:
            raise ValueError(
                f"stacker was trained on voters {list(self.voters)}, got {list(names)}; pass them in order"
            )
        n = len(outputs[0])
        proba = np.zeros((n, len(self.labels)))
        if n:
            raw = self.model.predict_proba(_features(outputs))
            for column, cls in enumerate(self.model.classes_):
                proba[:, int(cls)] = raw[:, column]
        return proba


def out_of_fold_outputs(
    voters: Sequence[Voter], train: Sequence[LabelledItem], folds: int, seed: int
) -> list[VoterOutput]:
    """Each voter's outputs on ``train``, every row predicted by a copy fitted without that row's fold."""
    from sklearn.model_selection import StratifiedKFold

    labels = [item.label for item in train]
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    results: list[VoterOutput] = []
    for voter in voters:
        parts: dict[int, VoterOutput] = {}
        order: list[int] = []
        for fit_idx, held_idx in splitter.split(np.zeros(len(train)), labels):
            trained = voter.fit([train[i] for i in fit_idx])
            parts[len(order)] = trained.predict_proba([train[i].text for i in held_idx])
            order.extend(int(i) for i in held_idx)
        first = next(iter(parts.values()))
        proba = np.vstack([p.proba for p in parts.values()])
        abstain = np.concatenate([p.abstain for p in parts.values()])
        explanations = tuple(e for p in parts.values() for e in p.explanations)
        inverse = np.argsort(order)
        stacked = VoterOutput(first.voter, first.labels, proba, abstain, explanations)
        results.append(stacked.take(inverse.tolist()))
    return results


def fit_stacker(outputs: Sequence[VoterOutput], y: Sequence[str], c: float = 1.0) -> Stacker:
    """Fit the meta-learner on (out-of-fold) voter outputs and gold labels."""
    from sklearn.linear_model import LogisticRegression

    labels = outputs[0].labels
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(_features(outputs), label_indices(labels, y))
    return Stacker(labels, tuple(o.voter for o in outputs), model)


@dataclass(frozen=True)
class _Early:
    settled: bool
    label: str | None
    tier: Tier
    reason: str
    confidence: float


@dataclass(frozen=True)
class Arbiter:
    """The fitted cascade: consensus settings, stacker, conformal thresholds."""

    labels: tuple[str, ...]
    config: ArbiterConfig
    stacker: Stacker
    thresholds: ConformalThresholds | None = None
    """None until :meth:`calibrate`; an uncalibrated arbiter settles nothing at the conformal tier."""

    def _early_exit(self, outputs: Sequence[VoterOutput], i: int) -> _Early | None:
        for out in outputs:
            action = out.safety_at(i)
            if action == "force":
                label = out.safety_labels[i]
                return _Early(True, label, "safety", f"{out.voter}: {out.explanations[i]}", 1.0)
            if action == "escalate":
                return _Early(False, None, "unsettled", f"safety escalation by {out.voter}: {out.explanations[i]}", 0.0)
        voting = [out for out in outputs if not out.abstain[i]]
        votes = {out.labels[int(out.proba[i].argmax())] for out in voting}
        confident = [out for out in voting if out.proba[i].max() >= self.config.consensus_confidence]
        if len(votes) == 1 and len(confident) >= self.config.consensus_min_voters:
            label = votes.pop()
            lowest = min(float(out.proba[i].max()) for out in voting)
            names = ", ".join(out.voter for out in voting)
            return _Early(True, label, "consensus", f"consensus of {names} on {label} (min p {lowest:.3f})", lowest)
        return None

    def consensus_mask(self, outputs: Sequence[VoterOutput]) -> np.ndarray:
        """True where safety or consensus decides the item (it never reaches the conformal tier)."""
        return np.array([self._early_exit(outputs, i) is not None for i in range(len(outputs[0]))], dtype=bool)

    def calibrate(
        self,
        outputs: Sequence[VoterOutput],
        y: Sequence[str],
        item_slices: Sequence[Sequence[str]],
        slice_names: Sequence[str],
        alpha: float,
        min_slice_items: int = 30,
        per_slice: bool = True,
    ) -> Arbiter:
        """A copy with conformal thresholds from the calibration items that reach the conformal tier.

        Calibrating on exactly the items the tier will see keeps the guarantee conditional on reaching it:
        consensus is a fixed function of the text, so the residual items stay exchangeable.
        """
        residual = np.flatnonzero(~self.consensus_mask(outputs)).tolist()
        proba = self.stacker.predict_proba([o.take(residual) for o in outputs])
        truth = label_indices(self.labels, [y[i] for i in residual])
        thresholds = calibrate_conformal(
            proba,
            truth,
            alpha,
            [item_slices[i] for i in residual],
            slice_names if per_slice else (),
            min_slice_items,
        )
        return Arbiter(self.labels, self.config, self.stacker, thresholds)

    def first_pass(
        self, item_ids: Sequence[str], outputs: Sequence[VoterOutput], item_slices: Sequence[Sequence[str]]
    ) -> PassResult:
        """Decide each item with the cheap voters' ``outputs`` (rows aligned with ``item_ids``)."""
        n = len(item_ids)
        if any(len(o) != n for o in outputs):
            raise ValueError(f"every voter output needs {n} rows, got {[len(o) for o in outputs]}")
        stacked = self.stacker.predict_proba(outputs) if n else np.zeros((0, len(self.labels)))
        sets = prediction_sets(stacked, self.thresholds, item_slices) if self.thresholds else [()] * n
        decisions: list[Decision] = []
        for i, item_id in enumerate(item_ids):
            best = int(stacked[i].argmax())
            guess, p = self.labels[best], float(stacked[i, best])
            early = self._early_exit(outputs, i)
            if early is not None:
                decisions.append(
                    Decision(
                        item_id,
                        early.settled,
                        early.label,
                        early.tier,
                        early.reason,
                        early.label or guess,
                        early.confidence if early.settled else p,
                    )
                )
                continue
            members = tuple(self.labels[j] for j in sets[i])
            if self.thresholds is None:
                reason = "arbiter not calibrated: no conformal tier"
                decisions.append(Decision(item_id, False, None, "unsettled", reason, guess, p))
            elif len(members) == 1:
                reason = f"conformal set {{{members[0]}}} at alpha {self.thresholds.alpha}"
                decisions.append(Decision(item_id, True, members[0], "conformal", reason, guess, p, members))
            else:
                reason = f"conformal set {set(members) or '{}'} is not a single label"
                decisions.append(Decision(item_id, False, None, "unsettled", reason, guess, p, members))
        return PassResult(self.labels, tuple(decisions), "first")

    def final_pass(self, first_pass: PassResult, llm_outputs: Mapping[str, VoterOutput]) -> PassResult:
        """Merge the LLM voter's one-row outputs (by item id) into the unsettled decisions.

        A non-abstaining LLM answer settles the item when its label is in the conformal set (or the set is empty
        or absent, e.g. after a safety escalation); otherwise the item is abstained on.
        """
        decisions: list[Decision] = []
        for d in first_pass.decisions:
            if d.settled:
                decisions.append(d)
                continue
            answer = llm_outputs.get(d.item_id)
            if answer is None:
                decisions.append(_replace(d, tier="abstain", reason=f"{d.reason}; no LLM answer"))
                continue
            llm_label = answer.predicted()[0]
            if llm_label is None:
                decisions.append(_replace(d, tier="abstain", reason=f"{d.reason}; {answer.explanations[0]}"))
            elif d.prediction_set and llm_label not in d.prediction_set:
                reason = f"{d.reason}; LLM says {llm_label}, outside the conformal set"
                decisions.append(_replace(d, tier="abstain", reason=reason))
            else:
                confidence = float(answer.proba[0].max())
                decisions.append(
                    _replace(
                        d,
                        settled=True,
                        label=llm_label,
                        tier="llm",
                        reason=answer.explanations[0],
                        confidence=confidence,
                    )
                )
        return PassResult(first_pass.labels, tuple(decisions), "final")


def _replace(decision: Decision, **changes: Any) -> Decision:
    from dataclasses import replace

    return replace(decision, **changes)


def predict_outputs(voters: Sequence[TrainedVoter], texts: Sequence[str]) -> list[VoterOutput]:
    """Every trained voter's output on ``texts``, in voter order."""
    return [voter.predict_proba(texts) for voter in voters]
