"""The base of every config object, in a module of its own so that config sections defined beside their logic
(pipeline/evaluation/) can build on it while pipeline/config.py imports those sections."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base for config objects: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
