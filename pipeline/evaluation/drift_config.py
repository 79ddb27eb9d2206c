"""The drift thresholds of a canary (`canary.drift` in an experiment file), apart from drift.py so that the
experiment config can name them without importing the statistics (scipy) behind the comparison."""

from __future__ import annotations

from pydantic import Field

from pipeline.strict import StrictModel

__all__ = ["DriftConfig"]


class DriftConfig(StrictModel):
    """When a canary run counts as drifted from its baseline."""

    min_agreement: float = Field(
        0.95, ge=0, le=1, description="Alarm when fewer than this share of items get the same answer as the baseline."
    )
    max_accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="Alarm when accuracy falls by more than this (0.02 = 2 points); needs gold."
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="Alarm when McNemar's test finds an accuracy drop at this significance."
    )
    max_missing: int = Field(0, ge=0, description="Alarm when more baseline items than this lack a canary answer.")
