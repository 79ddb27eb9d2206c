"""The model zoo: configs/models.yaml loads, and every kind of mistake is a one-line ConfigError that names
the file, the field path, what was expected and what was found."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.config import DEFAULT_MODELS_FILE, BudgetConfig, ModelZoo, expand_env, load_model_zoo, validate_as
from pipeline.llm.cost import Budget
from pipeline.llm.errors import ConfigError

GOOD_ALIAS = """\
    x:
      model: openai/gpt-4o-mini-2024-07-18
      version: "1"
"""


def write_zoo(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_shipped_zoo_loads_and_is_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_FAKE_BASE_URL", raising=False)
    zoo = load_model_zoo(DEFAULT_MODELS_FILE)
    assert zoo.default in zoo.models
    assert zoo.get("fake").api_base == "http://127.0.0.1:8089/v1"  # the ${VAR:-default} default
    for alias, cfg in zoo.models.items():
        assert cfg.version, f"{alias} has no version pin"
        assert cfg.price is not None, f"{alias} has no price"
        assert all(fallback in zoo.models for fallback in cfg.fallbacks)


def test_unknown_alias_lists_the_known_ones() -> None:
    zoo = load_model_zoo(DEFAULT_MODELS_FILE)
    with pytest.raises(ConfigError, match="unknown model alias 'gpt9'") as info:
        zoo.get("gpt9")
    for alias in ("fake", "gpt4o_mini", "haiku", "local"):
        assert alias in str(info.value)


def test_wrong_type_names_file_field_expected_and_found(tmp_path: Path) -> None:
    path = write_zoo(
        tmp_path,
        """\
        models:
          x:
            model: openai/gpt-4o-mini-2024-07-18
            limits: {max_concurrent: "lots"}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_model_zoo(path)
    message = str(info.value)
    assert str(path) in message
    assert "models.x.limits.max_concurrent" in message
    assert "valid integer" in message  # expected
    assert "found 'lots'" in message


def test_unknown_field_is_named(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, "models:\n" + GOOD_ALIAS + "      timout_s: 5\n")
    with pytest.raises(ConfigError, match=r"models\.x\.timout_s: unknown field \(check its spelling\); found 5"):
        load_model_zoo(path)


def test_missing_model_is_named(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, 'models:\n  x:\n    version: "1"\n')
    with pytest.raises(ConfigError, match=r"models\.yaml: models\.x\.model: required field is missing"):
        load_model_zoo(path)


def test_model_without_provider_says_what_to_write(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, "models:\n  x:\n    model: gpt-4o\n")
    with pytest.raises(ConfigError, match=r"models\.x\.model: .*'openai/gpt-4o'.*found 'gpt-4o'"):
        load_model_zoo(path)


def test_unknown_fallback_alias_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, "models:\n" + GOOD_ALIAS + "      fallbacks: [nope]\n")
    with pytest.raises(ConfigError) as info:
        load_model_zoo(path)
    message = str(info.value)
    assert str(path) in message
    assert "models.x.fallbacks names unknown alias 'nope'" in message
    assert "known: ['x']" in message


def test_out_of_range_values_are_errors(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, "models:\n" + GOOD_ALIAS + "      timeout_s: -1\n      max_attempts: 0\n")
    with pytest.raises(ConfigError) as info:
        load_model_zoo(path)
    assert "models.x.timeout_s: Input should be greater than 0; found -1" in str(info.value)
    assert "models.x.max_attempts: Input should be greater than or equal to 1; found 0" in str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("- just\n- a list\n", "expected a mapping at the top level, found list"),
        ("models: {x: [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_files(tmp_path: Path, body: str, expected: str) -> None:
    path = write_zoo(tmp_path, body)
    with pytest.raises(ConfigError, match=expected) as info:
        load_model_zoo(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)  # one line per problem, and here there is one problem


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.yaml: file not found"):
        load_model_zoo(tmp_path / "nothere.yaml")


def test_set_override_of_a_field() -> None:
    zoo = load_model_zoo(
        DEFAULT_MODELS_FILE,
        overrides=[
            "models.fake.timeout_s=0.5",
            "models.fake.limits.max_concurrent=3",
            "models.gpt4o_mini.fallbacks=[]",
            "default=fake",
            "experiment.unrelated=1",  # flags for other config objects are ignored here
        ],
    )
    assert zoo.get("fake").timeout_s == 0.5
    assert zoo.get("fake").limits.max_concurrent == 3
    assert zoo.get("fake").max_attempts == 4  # untouched siblings keep their file values
    assert zoo.get("gpt4o_mini").fallbacks == ()
    assert zoo.default == "fake"


def test_set_override_can_define_a_whole_alias() -> None:
    zoo = load_model_zoo(
        DEFAULT_MODELS_FILE,
        overrides=['models.extra={model: openai/fake-model-2, version: "2", needs_key: false}'],
    )
    assert zoo.get("extra").model == "openai/fake-model-2"
    assert zoo.get("extra").limits.max_concurrent == 8  # class default


def test_bad_set_value_is_reported_like_a_file_error() -> None:
    with pytest.raises(ConfigError, match=r"models\.fake\.limits\.max_concurrent: .*found 'lots'"):
        load_model_zoo(DEFAULT_MODELS_FILE, overrides=["models.fake.limits.max_concurrent=lots"])


def test_a_bad_value_from_an_override_names_the_override_not_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_model_zoo(
            DEFAULT_MODELS_FILE, overrides=["models.fake.timeout_s=5", "models.fake.limits={max_concurrent: 0}"]
        )
    assert str(info.value).startswith("override models.fake.limits={max_concurrent: 0} (--set or ASSAY_*): ")
    assert "models.fake.limits.max_concurrent" in str(info.value) and "models.yaml" not in str(info.value)


def test_set_flag_without_equals_says_how() -> None:
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        load_model_zoo(DEFAULT_MODELS_FILE, overrides=["models.fake.timeout_s"])


def test_env_expansion_with_default_and_with_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_zoo(
        tmp_path,
        """\
        models:
          x:
            model: openai/m
            api_base: ${ASSAY_TEST_BASE:-http://127.0.0.1:1234/v1}
        """,
    )
    monkeypatch.delenv("ASSAY_TEST_BASE", raising=False)
    assert load_model_zoo(path).get("x").api_base == "http://127.0.0.1:1234/v1"
    monkeypatch.setenv("ASSAY_TEST_BASE", "http://10.0.0.1:9/v1")
    assert load_model_zoo(path).get("x").api_base == "http://10.0.0.1:9/v1"


def test_env_reference_without_default_must_be_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_zoo(tmp_path, "models:\n  x:\n    model: openai/m\n    api_base: ${ASSAY_TEST_UNSET}/v1\n")
    monkeypatch.delenv("ASSAY_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"models\.x\.api_base: .*set ASSAY_TEST_UNSET"):
        load_model_zoo(path)


def test_expand_env_unit() -> None:
    env = {"A": "1"}
    assert expand_env("${A}-${B:-2}-${C:-}", env) == "1-2-"
    assert expand_env("no refs", env) == "no refs"


def test_models_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_zoo(tmp_path, "default: x\nmodels:\n" + GOOD_ALIAS)
    monkeypatch.setenv("ASSAY_MODELS_FILE", str(path))
    assert set(load_model_zoo().models) == {"x"}


def test_zoo_is_frozen() -> None:
    zoo = load_model_zoo(DEFAULT_MODELS_FILE)
    with pytest.raises(Exception, match="frozen"):
        zoo.get("fake").timeout_s = 1  # type: ignore[misc]
    assert isinstance(zoo, ModelZoo)


@pytest.mark.parametrize("limit", [-0.01, -5.0])
def test_negative_budget_is_a_config_error(limit: float) -> None:
    with pytest.raises(ConfigError, match=rf"budget must be >= 0 USD, found {limit}.*--max-cost"):
        Budget(limit)


def test_negative_budget_in_an_experiment_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"exp\.yaml: max_cost_usd: .*greater than or equal to 0; found -1"):
        validate_as(BudgetConfig, {"max_cost_usd": -1}, "exp.yaml")


def test_zero_and_unlimited_budgets_are_allowed() -> None:
    assert Budget(0.0).remaining_usd == 0.0
    assert Budget(None).remaining_usd is None


# --- bugs found by these tests and fixed in pipeline/config.py ---


def test_unknown_default_alias_is_an_error(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, "default: nope\nmodels:\n" + GOOD_ALIAS)
    with pytest.raises(ConfigError, match="nope"):
        load_model_zoo(path)


def test_unknown_fallback_error_is_short(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, "models:\n" + GOOD_ALIAS + "      fallbacks: [nope]\n")
    with pytest.raises(ConfigError) as info:
        load_model_zoo(path)
    assert "(top level)" not in str(info.value)
    assert "openai/gpt-4o-mini" not in str(info.value)  # the file's content is not echoed back


def test_models_as_a_list_is_a_config_error(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, "models: [a, b]\n")
    with pytest.raises(ConfigError, match="models: Input should be a valid dictionary"):
        load_model_zoo(path)


def test_numeric_version_override_is_accepted() -> None:
    zoo = load_model_zoo(DEFAULT_MODELS_FILE, overrides=["models.fake.version=2"])
    assert zoo.get("fake").version == "2"
