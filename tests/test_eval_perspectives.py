"""Perspectives -> synthesis message builders."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.evaluation.perspectives import PerspectivesConfig, Role, role_messages, synthesis_messages
from pipeline.llm.errors import ConfigError

CONFIG = PerspectivesConfig(
    roles=[
        Role(name="skeptic", system="Find what is wrong with: {title}."),
        Role(name="expert", system="You are a nutrition scientist.", user="Assess {title}: {text}"),
    ]
)
ITEM = {"id": "p1", "title": "Echinacea", "text": "Supports the immune system."}


def test_role_messages_render_the_item() -> None:
    assert role_messages(ITEM, CONFIG.roles[0]) == [
        {"role": "system", "content": "Find what is wrong with: Echinacea."},
        {"role": "user", "content": "Supports the immune system."},
    ]
    assert role_messages(ITEM, CONFIG.roles[1])[1]["content"] == "Assess Echinacea: Supports the immune system."


def test_role_template_with_unknown_field_names_it() -> None:
    with pytest.raises(ConfigError, match=r"uses \{price\}"):
        role_messages(ITEM, Role(name="r", system="x", user="{price}"))


def test_synthesis_lists_answers_in_role_order() -> None:
    messages = synthesis_messages(ITEM, {"expert": "Weak evidence {sic}.", "skeptic": "Vague claim."}, CONFIG)
    user = messages[1]["content"]
    assert user.index("### skeptic\nVague claim.") < user.index("### expert\nWeak evidence {sic}.")
    assert user.startswith("Item:\nSupports the immune system.")


def test_missing_role_answer_is_an_error_unless_allowed() -> None:
    with pytest.raises(ValueError, match=r"no answer from role\(s\) \['expert'\]"):
        synthesis_messages(ITEM, {"skeptic": "x"}, CONFIG)
    lenient = CONFIG.model_copy(update={"allow_missing": True})
    assert "(no answer from this analyst)" in synthesis_messages(ITEM, {"skeptic": "x"}, lenient)[1]["content"]
    with pytest.raises(ValueError, match="not configured"):
        synthesis_messages(ITEM, {"skeptic": "x", "expert": "y", "poet": "z"}, CONFIG)


def test_config_needs_two_distinct_roles() -> None:
    with pytest.raises(ValidationError):
        PerspectivesConfig(roles=[Role(name="a", system="s")])
    with pytest.raises(ValidationError, match="defined twice"):
        PerspectivesConfig(roles=[Role(name="a", system="s"), Role(name="a", system="t")])
