"""Perspectives -> synthesis: several analyst roles answer the same item, then one call synthesizes their answers.

The lead's stage graph turns these into two call stages: one call per (item, role) built by `role_messages`,
then one call per item built by `synthesis_messages` from the roles' answers. Both are pure functions of the
item and the config, so the call ids (hashes of the messages) are stable across runs.

    perspectives:
      roles:
        - {name: skeptic, system: "You look for what could be wrong with the claim."}
        - {name: domain_expert, system: "You are a nutrition scientist."}
      synthesis_system: "You weigh several analysts' views and give one answer."
      synthesis_user: "Item:\\n{text}\\n\\nThe analysts said:\\n{perspectives}\\n\\nGive your synthesis."
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from pipeline.prompts import render
from pipeline.strict import StrictModel

__all__ = ["PerspectivesConfig", "Role", "role_messages", "synthesis_messages"]

MISSING_ANSWER = "(no answer from this analyst)"


class Role(StrictModel):
    """One analyst role."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="Role name (in call ids and the synthesis).")
    system: str = Field(min_length=1, description="System prompt of the role; may use the item's {fields}.")
    user: str = Field("{text}", description="User template: the item's fields as {placeholders}.")


class PerspectivesConfig(StrictModel):
    """Analyst roles and the synthesis prompt."""

    roles: list[Role] = Field(min_length=2, description="At least two roles (one role has nothing to synthesize).")
    synthesis_system: str = Field("You combine several analysts' answers into one well-argued answer.")
    synthesis_user: str = Field(
        "Item:\n{text}\n\nThe analysts answered:\n\n{perspectives}\n\nWrite one synthesis: where they agree, where "
        "they disagree and why, and your conclusion.",
        description="Template with the item's fields and {perspectives} (the roles' answers, one block each).",
    )
    perspective_block: str = Field(
        "### {role}\n{answer}", description="How one role's answer appears inside {perspectives}."
    )
    allow_missing: bool = Field(
        False, description="True: a role without an answer appears as '(no answer from this analyst)'; False: error."
    )

    @model_validator(mode="after")
    def _unique_roles(self) -> PerspectivesConfig:
        names = [role.name for role in self.roles]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"role {duplicates[0]!r} is defined twice; give each role its own name")
        return self


def role_messages(item: Mapping[str, Any], role: Role) -> list[dict[str, str]]:
    """The messages of one role's call on `item` (fields fill the role's templates)."""
    return [
        {"role": "system", "content": render(role.system, item, f"role {role.name} system")},
        {"role": "user", "content": render(role.user, item, f"role {role.name} user")},
    ]


def synthesis_messages(
    item: Mapping[str, Any], answers_by_role: Mapping[str, str | None], config: PerspectivesConfig
) -> list[dict[str, str]]:
    """The synthesis call's messages: every role's answer, in the config's role order, inside the template."""
    known = [role.name for role in config.roles]
    unknown = sorted(set(answers_by_role) - set(known))
    if unknown:
        raise ValueError(f"answers from role {unknown[0]!r}, which is not configured; roles are {known}")
    missing = [name for name in known if answers_by_role.get(name) is None]
    if missing and not config.allow_missing:
        raise ValueError(
            f"item {item.get('id', '?')}: no answer from role(s) {missing}; re-run those role calls, or set "
            "perspectives.allow_missing: true to synthesize without them"
        )
    blocks = [
        render(
            config.perspective_block,
            {"role": name, "answer": answers_by_role.get(name) or MISSING_ANSWER},
            "perspective_block",
        )
        for name in known
    ]
    context = {**item, "perspectives": "\n\n".join(blocks)}
    messages = [{"role": "user", "content": render(config.synthesis_user, context, "synthesis_user")}]
    if config.synthesis_system:
        messages.insert(0, {"role": "system", "content": render(config.synthesis_system, context, "synthesis_system")})
    return messages
