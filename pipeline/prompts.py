"""Prompt templates: rendering with `{field}` placeholders, and a content-hash version per template set.

Templates use Python's format syntax; `{{` and `}}` are literal braces (needed for JSON examples).
The prompt version is a hash of the templates, recorded in every report so that two runs with different
wording are never compared by accident.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.calls import canonical_json
from pipeline.llm.errors import ConfigError

if TYPE_CHECKING:  # pipeline.config imports config sections that render prompts (evaluation.judges)
    from pipeline.config import PromptConfig


@dataclass(frozen=True)
class PromptSet:
    """The templates of one experiment with their version hash."""

    system: str
    user: str
    repair: str
    version: str

    @classmethod
    def from_config(cls, config: PromptConfig) -> PromptSet:
        """Build from config, checking every template parses."""
        for name in ("system", "user", "repair"):
            template_fields(getattr(config, name), name)
        digest = hashlib.sha256(canonical_json(config.model_dump()).encode()).hexdigest()[:12]
        return cls(config.system, config.user, config.repair, digest)

    def messages(self, context: Mapping[str, Any]) -> list[dict[str, str]]:
        """System (if any) and user messages rendered with `context`."""
        rendered = [{"role": "user", "content": render(self.user, context, "user")}]
        if self.system:
            rendered.insert(0, {"role": "system", "content": render(self.system, context, "system")})
        return rendered

    def to_json(self) -> dict[str, str]:
        """For the run bundle's prompt_templates.json."""
        return {"system": self.system, "user": self.user, "repair": self.repair, "version": self.version}


def template_fields(template: str, name: str = "template") -> list[str]:
    """Placeholder names in `template`; a malformed template is a ConfigError naming it."""
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as exc:
        raise ConfigError(
            f"prompt template {name!r} is malformed ({exc}); write literal braces as {{{{ and }}}}"
        ) from None


def render(template: str, context: Mapping[str, Any], name: str = "template") -> str:
    """Fill `template`; a placeholder with no value is a ConfigError listing the available ones."""
    missing = [field for field in template_fields(template, name) if field.split(".")[0].split("[")[0] not in context]
    if missing:
        raise ConfigError(
            f"prompt template {name!r} uses {{{missing[0]}}} but the item has no such field; "
            f"available: {', '.join(sorted(context))}"
        )
    return template.format_map(dict(context))
