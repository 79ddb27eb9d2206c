"""The base of every evaluation record that is written to disk: frozen, strict and versioned.

A record is a pydantic model so that `to_json` / `from_json` round-trip it exactly (dataclass fields such as
`Interval` included); `format_version` is a `Literal` on each subclass, so a file of another version fails to
load with the field named instead of being misread.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.llm.errors import ConfigError


class Record(BaseModel):
    """A frozen, strict, versioned record (subclasses declare `format_version: Literal[N] = N`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> str:
        """The record as one JSON document (what goes to disk)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> Self:
        """Parse a record written by `to_json`; a bad or other-version document is a one-line ConfigError."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise ConfigError(
                f"{source}: not a {cls.__name__} record: {where}: {first['msg']} "
                f"(found {first.get('input')!r}); rewrite it with this version of assay"
            ) from None
