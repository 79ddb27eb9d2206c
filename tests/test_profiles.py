"""Client profiles, the scoring rule, the prompt round trip and the rule-following responders."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest
from pydantic import ValidationError

from pipeline.data.demographic_names import ETHNICITIES, GENDERS, load_name_lists
from pipeline.data.profiles import (
    ClientProfile,
    ProfileSampleConfig,
    ProfileVariant,
    generate_variants,
    risk_band,
    score_breakdown,
    scoring_rule_markdown,
)
from pipeline.data.risk_prompt import (
    ANSWER_SCHEMA,
    BUSINESS_RULES,
    SYSTEM_TEMPLATE,
    USER_TEMPLATE,
    fairness_row,
    parse_prompt,
    profile_item,
    prompt_fields,
)
from pipeline.extract import extract_and_validate, validate_answer
from pipeline.llm.errors import ConfigError, OutputValidationError
from pipeline.prompts import render, template_fields
from tests.fakes.risk_responder import make_biased_responder, make_unbiased_responder, unbiased_responder


def _profile(
    answers: tuple[int, ...], horizon: int = 10, experience: str = "some", wealth: bool = False
) -> ClientProfile:
    return ClientProfile("P1", 50_000, 150_000 if wealth else 50_000, horizon, experience, answers)


def test_scoring_rule_hand_cases() -> None:
    # Tolerance 5, horizon 1 -> 0 points, no experience, no wealth: total 5 -> band 1.
    assert score_breakdown(_profile((1, 1, 1, 1, 1), horizon=1, experience="none")).total == 5
    assert risk_band(_profile((1, 1, 1, 1, 1), horizon=1, experience="none")) == 1
    # Tolerance 25 + 3 (horizon 20) + 2 (extensive) + 1 (net worth 3 x income) = 31 -> band 6.
    top = _profile((5, 5, 5, 5, 5), horizon=20, experience="extensive", wealth=True)
    assert score_breakdown(top).total == 31 and risk_band(top) == 6
    # Band edges (horizon 10 -> 2 points, some experience -> 1): tolerance 7 -> total 10 -> band 1;
    # tolerance 8 -> total 11 -> band 2; tolerance 23 -> total 26 -> band 5; tolerance 24 -> 27 -> band 6.
    assert [risk_band(_profile(a)) for a in [(2, 2, 1, 1, 1), (2, 2, 2, 1, 1)]] == [1, 2]
    assert [risk_band(_profile(a)) for a in [(5, 5, 5, 4, 4), (5, 5, 5, 5, 4)]] == [5, 6]


def test_short_horizon_caps_the_band_at_2() -> None:
    profile = _profile((5, 5, 5, 5, 5), horizon=2, experience="extensive", wealth=True)
    breakdown = score_breakdown(profile)
    assert breakdown.band_before_cap == 6
    assert breakdown.band == 2


def test_scoring_rule_markdown_states_the_thresholds() -> None:
    text = scoring_rule_markdown()
    assert "| Band | 1 | 2 | 3 | 4 | 5 | 6 |" in text
    assert "caps the band at 2" in text
    assert "Age, gender, ethnicity and name play no part" in text


def test_counterfactual_sample_is_paired_balanced_and_seeded() -> None:
    config = ProfileSampleConfig(n_profiles=12, seed=5)
    variants = generate_variants(config)
    assert len(variants) == 12 * len(GENDERS) * len(ETHNICITIES)
    assert variants == generate_variants(config)
    assert variants != generate_variants(config.model_copy(update={"seed": 6}))
    by_pair: dict[str | None, list[ProfileVariant]] = defaultdict(list)
    for v in variants:
        by_pair[v.pair_id].append(v)
    names = load_name_lists()
    for members in by_pair.values():
        assert len({m.profile for m in members}) == 1
        assert {(m.demographics.gender, m.demographics.ethnicity) for m in members} == {
            (g, e) for g in GENDERS for e in ETHNICITIES
        }
        assert len({m.demographics.age for m in members}) == 1
        # Consistent swap: every variant uses the same position in its name lists.
        positions = {
            names.first_names[(m.demographics.gender, m.demographics.ethnicity)].index(m.demographics.first_name)
            for m in members
        }
        assert len(positions) == 1
        for m in members:
            assert names.groups_of(m.demographics.first_name, m.demographics.last_name) == {
                "gender": m.demographics.gender,
                "ethnicity": m.demographics.ethnicity,
            }
    bands = Counter(
        v.true_band for v in variants if v.demographics.gender == "female" and v.demographics.ethnicity == "white"
    )
    assert bands == Counter({b: 2 for b in range(1, 7)})


def test_independent_design_balances_bands_by_groups() -> None:
    variants = generate_variants(ProfileSampleConfig(n_profiles=48, seed=1, design="independent"))
    assert len(variants) == 48 and all(v.pair_id is None for v in variants)
    cells = Counter((v.true_band, v.demographics.gender, v.demographics.ethnicity) for v in variants)
    # 8 profiles per band over 8 gender x ethnicity groups: one each.
    assert set(cells.values()) == {1} and len(cells) == 48


def test_age_group_can_be_varied_counterfactually() -> None:
    variants = generate_variants(ProfileSampleConfig(n_profiles=6, vary=("age_group",)))
    assert len(variants) == 18
    first = [v for v in variants if v.pair_id == variants[0].pair_id]
    assert {v.demographics.age_group for v in first} == {"under_40", "40_to_59", "60_plus"}
    assert len({(v.demographics.first_name, v.demographics.last_name) for v in first}) == 1


def test_sample_config_rejects_unknown_attribute() -> None:
    with pytest.raises(ValidationError, match="religion"):
        ProfileSampleConfig(vary=("religion",))


def test_variant_record_round_trip_and_version_check() -> None:
    variant = generate_variants(ProfileSampleConfig(n_profiles=1))[0]
    record = json.loads(json.dumps(variant.to_record()))
    assert ProfileVariant.from_record(record) == variant
    assert record["true_band"] == variant.true_band
    with pytest.raises(ConfigError, match="format_version 0"):
        ProfileVariant.from_record(record | {"format_version": 0})


def test_prompt_round_trip_for_every_variant() -> None:
    assert set(template_fields(USER_TEMPLATE)) <= set(
        prompt_fields(generate_variants(ProfileSampleConfig(n_profiles=1))[0])
    )
    assert template_fields(SYSTEM_TEMPLATE) == []
    for variant in generate_variants(ProfileSampleConfig(n_profiles=18, seed=2)):
        parsed = parse_prompt(render(USER_TEMPLATE, prompt_fields(variant)))
        assert parsed.profile == ClientProfile(
            "",
            *[
                getattr(variant.profile, f)
                for f in ("annual_income", "net_worth", "horizon_years", "experience", "answers")
            ],
        )
        assert (parsed.first_name, parsed.last_name, parsed.age) == (
            variant.demographics.first_name,
            variant.demographics.last_name,
            variant.demographics.age,
        )


def test_parse_prompt_names_a_missing_line() -> None:
    with pytest.raises(OutputValidationError, match="'income'"):
        parse_prompt("Name: Ann Lee\nAge: 40\n" + "\n".join(f"Q{i}. x Answer: 3 of 5" for i in range(1, 6)))


def _request(variant: ProfileVariant) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_TEMPLATE},
            {"role": "user", "content": render(USER_TEMPLATE, prompt_fields(variant))},
        ]
    }


def test_unbiased_responder_answers_the_right_band_with_a_valid_answer() -> None:
    for variant in generate_variants(ProfileSampleConfig(n_profiles=12, seed=3)):
        extraction = extract_and_validate(unbiased_responder(_request(variant)), ANSWER_SCHEMA, BUSINESS_RULES)
        assert extraction.valid, extraction.reason
        assert extraction.value["risk_band"] == variant.true_band


def test_biased_responder_shifts_only_its_group() -> None:
    responder = make_biased_responder("ethnicity=black", shift=1, fraction=1.0, seed=0)
    for variant in generate_variants(ProfileSampleConfig(n_profiles=12, seed=3)):
        band = json.loads(responder(_request(variant)))["risk_band"]
        expected = min(6, variant.true_band + 1) if variant.demographics.ethnicity == "black" else variant.true_band
        assert band == expected


def test_biased_responder_fraction_and_noise_are_deterministic() -> None:
    variants = generate_variants(ProfileSampleConfig(n_profiles=60, seed=4))
    responder = make_biased_responder({"gender": "female"}, fraction=0.3, seed=9)
    shifted = [json.loads(responder(_request(v)))["risk_band"] != v.true_band for v in variants if v.true_band < 6]
    females = [v.demographics.gender == "female" for v in variants if v.true_band < 6]
    assert not any(s for s, f in zip(shifted, females, strict=True) if not f)
    share = sum(shifted) / sum(females)
    assert 0.2 < share < 0.4
    assert [responder(_request(v)) for v in variants[:5]] == [responder(_request(v)) for v in variants[:5]]
    noisy = make_unbiased_responder(noise=0.5, seed=1)
    wrong = sum(json.loads(noisy(_request(v)))["risk_band"] != v.true_band for v in variants)
    assert 0.35 < wrong / len(variants) < 0.65


def test_business_rules() -> None:
    good = {
        "risk_band": 3,
        "allocation": {"equities": 40, "bonds": 45, "cash": 10, "alternatives": 5.4},
        "confidence": 0.7,
        "rationale": "ok",
    }
    assert validate_answer(good, ANSWER_SCHEMA, BUSINESS_RULES) is None
    off = good | {"allocation": {"equities": 40, "bonds": 45, "cash": 10, "alternatives": 5.6}}
    assert "sum to 100.6" in (validate_answer(off, ANSWER_SCHEMA, BUSINESS_RULES) or "")
    assert "risk_band" in (validate_answer(good | {"risk_band": 7}, None, BUSINESS_RULES) or "")
    assert validate_answer(good | {"risk_band": 7}, ANSWER_SCHEMA, BUSINESS_RULES) is not None


def test_fairness_row_from_answers() -> None:
    variant = generate_variants(ProfileSampleConfig(n_profiles=1))[0]
    row = fairness_row(variant, json.loads(unbiased_responder(_request(variant))))
    assert row.predicted_band == variant.true_band and row.confidence == 0.8
    assert row.groups == variant.groups and row.pair_id == variant.pair_id
    assert fairness_row(variant, None).predicted_band is None
    assert fairness_row(variant, {"risk_band": 9}).predicted_band is None


def test_profile_item_carries_fields_and_gold() -> None:
    variant = generate_variants(ProfileSampleConfig(n_profiles=1))[0]
    item = profile_item(variant)
    assert item.item_id == variant.variant_id
    assert item.gold == str(variant.true_band)
    assert render(USER_TEMPLATE, item.fields) == render(USER_TEMPLATE, prompt_fields(variant))
