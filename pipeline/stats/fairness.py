"""The fairness audit: do a model's risk bands differ by demographic group when the right band does not?

:func:`audit` is a pure function over :class:`FairnessRow` (one answer: the item, its counterfactual pair, its
group attributes, the right band, the predicted band or None, the stated confidence) returning a typed
:class:`FairnessAudit`. For every audited attribute, and for the intersection of all of them:

- per group: accuracy (an unparseable answer counts as wrong), mean absolute error and signed ordinal error
  (positive = placed in a riskier band than the rule gives), each with a seeded bootstrap CI
  (:mod:`pipeline.stats.bootstrap`); direction shares (over / exact / under); calibration of the stated
  confidence (ECE, Brier; :mod:`pipeline.stats.calibration`). A group with fewer valid answers than
  ``min_cell_size`` is reported as too small and left out of every test.
- across groups: Kruskal-Wallis on signed errors; chi-square on direction x group (Monte-Carlo p-value and a
  warning where expected counts are below 5); Cohen's d between every two groups with its Hedges & Olkin CI
  (an effect size, not a test).
- paired design (rows sharing ``pair_id`` and every other attribute): per pair of groups, the flip rate
  (share of pairs placed in different bands), exact McNemar on correctness (:mod:`pipeline.stats.paired`) and
  Wilcoxon signed-rank on the band differences.

Every p-value joins one family, adjusted by Holm and by Benjamini-Hochberg side by side
(:mod:`pipeline.stats.multiple_testing`); ``FairnessConfig.correction`` picks the one the verdicts use. Each
attribute gets a one-sentence verdict.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.llm.errors import ConfigError
from pipeline.stats.bootstrap import BootstrapInterval, bootstrap_ci
from pipeline.stats.calibration import calibration
from pipeline.stats.effect_size import cohens_d
from pipeline.stats.group_tests import GroupTest, chi_square_independence, kruskal_wallis, wilcoxon_signed_rank
from pipeline.stats.multiple_testing import adjust_pvalues
from pipeline.stats.paired import mcnemar_from_counts
from pipeline.stats.proportions import Interval, wilson_interval

__all__ = [
    "AUDIT_FORMAT_VERSION",
    "ROW_FORMAT_VERSION",
    "EffectSize",
    "FairnessAudit",
    "FairnessConfig",
    "FairnessRow",
    "GroupMetrics",
    "PairedComparison",
    "TestResult",
    "Verdict",
    "audit",
]

ROW_FORMAT_VERSION = 1
"""Version of :meth:`FairnessRow.to_record`."""
AUDIT_FORMAT_VERSION = 1
"""Version of :meth:`FairnessAudit.to_dict`."""
INTERSECTION_SEPARATOR = "×"
"""Joins attribute names (``gender×ethnicity``) of the intersectional analysis; values are joined by ``/``."""

Direction = Literal["over", "exact", "under"]
DIRECTIONS: tuple[Direction, ...] = ("over", "exact", "under")


@dataclass(frozen=True)
class FairnessRow:
    """One answer to audit."""

    item_id: str
    """The variant's id (unique)."""
    pair_id: str | None
    """Shared by the counterfactual variants of one profile; None outside the paired design."""
    groups: Mapping[str, str]
    """Attribute -> group, e.g. {"gender": "female", "ethnicity": "black", "age_group": "40_to_59"}."""
    true_band: int
    predicted_band: int | None
    """None when the answer could not be parsed or failed validation."""
    confidence: float | None = None
    """Stated probability that the band is right; None when not given."""

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict with ``format_version``."""
        return {
            "format_version": ROW_FORMAT_VERSION,
            "item_id": self.item_id,
            "pair_id": self.pair_id,
            "groups": dict(self.groups),
            "true_band": self.true_band,
            "predicted_band": self.predicted_band,
            "confidence": self.confidence,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FairnessRow:
        """Read :meth:`to_record`'s dict back; ConfigError for another format version."""
        if record.get("format_version") != ROW_FORMAT_VERSION:
            raise ConfigError(
                f"fairness row {record.get('item_id')!r} has format_version {record.get('format_version')!r}; "
                f"this code reads {ROW_FORMAT_VERSION}. Rebuild the rows from the answers."
            )
        predicted = record.get("predicted_band")
        confidence = record.get("confidence")
        pair_id = record.get("pair_id")
        return cls(
            item_id=str(record["item_id"]),
            pair_id=None if pair_id is None else str(pair_id),
            groups={str(k): str(v) for k, v in record["groups"].items()},
            true_band=int(record["true_band"]),
            predicted_band=None if predicted is None else int(predicted),
            confidence=None if confidence is None else float(confidence),
        )


class FairnessConfig(BaseModel):
    """Settings of one fairness audit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attributes: tuple[str, ...] = ("gender", "ethnicity")
    """Group attributes to audit; every row's ``groups`` must have each of them."""
    intersectional: bool = True
    """Also audit the combination of all attributes (e.g. gender×ethnicity) when there are two or more."""
    min_cell_size: int = Field(30, ge=2)
    """Groups with fewer valid answers are reported as too small and left out of every test."""
    bootstrap_resamples: int = Field(1000, ge=0)
    """Bootstrap resamples per confidence interval; 0 skips the intervals (power studies need the speed)."""
    monte_carlo_resamples: int = Field(5000, ge=100)
    """Permutations of the Monte-Carlo chi-square p-value, used where an expected count is below 5."""
    seed: int = 0
    """Seed of the bootstrap and Monte-Carlo draws: the same rows and config give the same audit."""
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    """Family-wise (Holm) or false-discovery (BH) level at which a test counts as a finding."""
    confidence_level: float = Field(0.95, gt=0.0, lt=1.0)
    """Level of every confidence interval."""
    correction: Literal["holm", "fdr_bh"] = "holm"
    """Adjustment the verdicts use; the tables show both."""
    calibration_bins: int = Field(10, ge=1)
    """Equal-width confidence bins of the ECE."""

    @field_validator("attributes")
    @classmethod
    def _some_attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"attributes={value!r} must name one or more distinct attributes, e.g. ('gender',)")
        return value


@dataclass(frozen=True)
class GroupMetrics:
    """Accuracy, error and calibration of one group."""

    attribute: str
    group: str
    n: int
    """Answers of the group, valid or not."""
    n_valid: int
    """Answers with a band."""
    too_small: bool
    """True when ``n_valid < min_cell_size``: reported, not tested."""
    accuracy: float
    """Right bands / all answers (invalid counts as wrong)."""
    mean_absolute_error: float | None
    """Mean |predicted - true| over valid answers (None without any)."""
    signed_error: float | None
    """Mean predicted - true over valid answers: positive = riskier than the rule."""
    over_rate: float | None
    exact_rate: float | None
    under_rate: float | None
    mean_predicted_band: float | None
    accuracy_ci: Interval | None = None
    mean_absolute_error_ci: Interval | None = None
    signed_error_ci: Interval | None = None
    ece: float | None = None
    brier: float | None = None
    n_with_confidence: int = 0


@dataclass(frozen=True)
class TestResult:
    """One test of the family, with both adjustments."""

    test_id: str
    """Unique in the audit, e.g. ``ethnicity: wilcoxon black vs white``."""
    attribute: str
    test: str
    """``kruskal_wallis``, ``chi_square_direction``, ``mcnemar_exact`` or ``wilcoxon_signed_rank``."""
    groups: tuple[str, ...]
    """The groups compared."""
    statistic: float
    df: int | None
    p_value: float
    method: str
    note: str = ""
    p_holm: float = float("nan")
    p_bh: float = float("nan")
    reject_holm: bool = False
    reject_bh: bool = False


@dataclass(frozen=True)
class EffectSize:
    """Cohen's d of the signed errors of ``group_a`` minus ``group_b``."""

    attribute: str
    group_a: str
    group_b: str
    d: float
    low: float
    high: float
    n_a: int
    n_b: int


@dataclass(frozen=True)
class PairedComparison:
    """Counterfactual pairs that differ only in one attribute: ``group_a`` vs ``group_b``."""

    attribute: str
    group_a: str
    group_b: str
    n_pairs: int
    """Pairs where both answers have a band."""
    n_flips: int
    """Pairs placed in different bands."""
    flip_rate: float
    flip_rate_ci: Interval | None
    a_higher: int
    """Pairs where group_a got the riskier band."""
    b_higher: int
    mean_difference: float
    """Mean band of group_a minus group_b over the pairs."""
    a_right_b_wrong: int
    a_wrong_b_right: int


@dataclass(frozen=True)
class Verdict:
    """The plain-language finding for one attribute."""

    attribute: str
    significant: bool
    sentence: str
    headline_test: str | None = None
    """``test_id`` of the test the sentence quotes (None when nothing was found)."""


@dataclass(frozen=True)
class FairnessAudit:
    """Everything the audit found; :meth:`to_dict` is ready for stats_summary.json."""

    config: FairnessConfig
    n_rows: int
    groups: tuple[GroupMetrics, ...]
    tests: tuple[TestResult, ...]
    effect_sizes: tuple[EffectSize, ...]
    paired: tuple[PairedComparison, ...]
    verdicts: tuple[Verdict, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    format_version: int = AUDIT_FORMAT_VERSION

    @property
    def attributes(self) -> tuple[str, ...]:
        """Audited attributes, the intersection last."""
        return tuple(dict.fromkeys(g.attribute for g in self.groups))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN and infinities become None) with ``format_version``."""
        return {
            "format_version": self.format_version,
            "config": self.config.model_dump(mode="json"),
            "n_rows": self.n_rows,
            "verdicts": [_clean(asdict(v)) for v in self.verdicts],
            "groups": [_clean(asdict(g)) for g in self.groups],
            "tests": [_clean(asdict(t)) for t in self.tests],
            "effect_sizes": [_clean(asdict(e)) for e in self.effect_sizes],
            "paired": [_clean(asdict(p)) for p in self.paired],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FairnessAudit:
        """Read :meth:`to_dict`'s dict back (a value it wrote as None where a number is due becomes NaN);
        ConfigError for another format version."""
        if data.get("format_version") != AUDIT_FORMAT_VERSION:
            raise ConfigError(
                f"fairness audit has format_version {data.get('format_version')!r}; this code reads "
                f"{AUDIT_FORMAT_VERSION}. Re-run the fairness_stats stage."
            )
        return cls(
            config=FairnessConfig.model_validate(data["config"]),
            n_rows=int(data["n_rows"]),
            groups=tuple(_restore(GroupMetrics, g) for g in data["groups"]),
            tests=tuple(_restore(TestResult, t) for t in data["tests"]),
            effect_sizes=tuple(_restore(EffectSize, e) for e in data["effect_sizes"]),
            paired=tuple(_restore(PairedComparison, c) for c in data["paired"]),
            verdicts=tuple(_restore(Verdict, v) for v in data["verdicts"]),
            warnings=tuple(data["warnings"]),
        )


_T = TypeVar("_T")


def _restore(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """A dataclass of this module (or an Interval) from its ``_clean(asdict(...))`` form."""
    values: dict[str, Any] = {}
    for spec in fields(cls):  # type: ignore[arg-type]
        value = data[spec.name]
        kind = str(spec.type)
        if value is None and kind == "float":
            value = float("nan")  # _clean wrote NaN as None
        elif isinstance(value, Mapping) and kind.startswith("Interval"):
            # Bootstrap intervals carry their standard error and resample count; Wilson intervals do not.
            value = _restore(BootstrapInterval if "standard_error" in value else Interval, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[spec.name] = value
    return cls(**values)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------------
# Per-group metrics
# ---------------------------------------------------------------------------------------------------------------


def _group_key(row: FairnessRow, attributes: Sequence[str]) -> str:
    return "/".join(row.groups[a] for a in attributes)


def _partition(rows: Sequence[FairnessRow], attributes: Sequence[str]) -> dict[str, list[FairnessRow]]:
    parts: dict[str, list[FairnessRow]] = defaultdict(list)
    for row in rows:
        parts[_group_key(row, attributes)].append(row)
    return dict(sorted(parts.items()))


def _ci(
    values: np.ndarray, statistic: Callable[[np.ndarray], Any], config: FairnessConfig, salt: int
) -> Interval | None:
    if config.bootstrap_resamples < 2 or values.size < 2:
        return None
    return bootstrap_ci(
        values,
        statistic,
        n_resamples=config.bootstrap_resamples,
        confidence=config.confidence_level,
        seed=config.seed + salt,
    )


def _group_metrics(attribute: str, group: str, rows: list[FairnessRow], config: FairnessConfig) -> GroupMetrics:
    correct = np.array([r.predicted_band == r.true_band for r in rows], dtype=float)
    valid = [r for r in rows if r.predicted_band is not None]
    signed = np.array([r.predicted_band - r.true_band for r in valid if r.predicted_band is not None], dtype=float)
    too_small = len(valid) < config.min_cell_size
    with_conf = [r for r in rows if r.confidence is not None]
    cal = (
        calibration(
            [r.confidence for r in with_conf if r.confidence is not None],
            [r.predicted_band == r.true_band for r in with_conf],
            config.calibration_bins,
        )
        if with_conf
        else None
    )
    has_valid = signed.size > 0
    return GroupMetrics(
        attribute=attribute,
        group=group,
        n=len(rows),
        n_valid=len(valid),
        too_small=too_small,
        accuracy=float(correct.mean()),
        mean_absolute_error=float(np.abs(signed).mean()) if has_valid else None,
        signed_error=float(signed.mean()) if has_valid else None,
        over_rate=float((signed > 0).mean()) if has_valid else None,
        exact_rate=float((signed == 0).mean()) if has_valid else None,
        under_rate=float((signed < 0).mean()) if has_valid else None,
        mean_predicted_band=float(np.mean([r.predicted_band for r in valid])) if has_valid else None,
        accuracy_ci=None if too_small else _ci(correct, np.mean, config, 1),
        mean_absolute_error_ci=None if too_small else _ci(np.abs(signed), np.mean, config, 2),
        signed_error_ci=None if too_small else _ci(signed, np.mean, config, 3),
        ece=cal.ece if cal else None,
        brier=cal.brier if cal else None,
        n_with_confidence=len(with_conf),
    )


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------


def _signed_errors(rows: Sequence[FairnessRow]) -> list[float]:
    return [float(r.predicted_band - r.true_band) for r in rows if r.predicted_band is not None]


def _direction(row: FairnessRow) -> Direction:
    assert row.predicted_band is not None
    return "over" if row.predicted_band > row.true_band else "under" if row.predicted_band < row.true_band else "exact"


def _test(attribute: str, test: str, groups: Sequence[str], outcome: GroupTest, label: str = "") -> TestResult:
    test_id = f"{attribute}: {test}" + (f" {label}" if label else "")
    return TestResult(
        test_id,
        attribute,
        test,
        tuple(groups),
        outcome.statistic,
        outcome.df,
        outcome.p_value,
        outcome.method,
        outcome.note,
    )


def _omnibus_tests(
    attribute: str, parts: Mapping[str, list[FairnessRow]], testable: Sequence[str], config: FairnessConfig, salt: int
) -> list[TestResult]:
    if len(testable) < 2:
        return []
    kw = kruskal_wallis([_signed_errors(parts[g]) for g in testable])
    table = [
        [sum(1 for r in parts[g] if r.predicted_band is not None and _direction(r) == d) for d in DIRECTIONS]
        for g in testable
    ]
    chi = chi_square_independence(table, config.monte_carlo_resamples, config.seed + salt)
    return [_test(attribute, "kruskal_wallis", testable, kw), _test(attribute, "chi_square_direction", testable, chi)]


def _effect_sizes(
    attribute: str, parts: Mapping[str, list[FairnessRow]], testable: Sequence[str], config: FairnessConfig
) -> list[EffectSize]:
    out = []
    for a, b in itertools.combinations(testable, 2):
        result = cohens_d(_signed_errors(parts[a]), _signed_errors(parts[b]), config.confidence_level)
        out.append(EffectSize(attribute, a, b, result.d, result.low, result.high, result.n_a, result.n_b))
    return out


def _pairs(rows: Sequence[FairnessRow], attribute: str) -> dict[tuple[str, str], list[tuple[FairnessRow, FairnessRow]]]:
    """Rows matched on pair_id and every other attribute, by the two values of ``attribute`` they differ in."""
    by_key: dict[tuple[Any, ...], dict[str, FairnessRow]] = defaultdict(dict)
    for row in rows:
        if row.pair_id is None:
            continue
        others = tuple(sorted((k, v) for k, v in row.groups.items() if k != attribute))
        by_key[(row.pair_id, others)].setdefault(row.groups[attribute], row)
    matched: dict[tuple[str, str], list[tuple[FairnessRow, FairnessRow]]] = defaultdict(list)
    for members in by_key.values():
        for a, b in itertools.combinations(sorted(members), 2):
            matched[(a, b)].append((members[a], members[b]))
    return matched


def _paired(
    attribute: str, rows: Sequence[FairnessRow], testable: Sequence[str], config: FairnessConfig
) -> tuple[list[PairedComparison], list[TestResult]]:
    comparisons: list[PairedComparison] = []
    tests: list[TestResult] = []
    matched = _pairs(rows, attribute)
    for a, b in itertools.combinations(sorted(testable), 2):
        pairs = matched.get((a, b), [])
        if not pairs:
            continue
        right_wrong = sum(1 for x, y in pairs if x.predicted_band == x.true_band and y.predicted_band != y.true_band)
        wrong_right = sum(1 for x, y in pairs if x.predicted_band != x.true_band and y.predicted_band == y.true_band)
        both = [(x.predicted_band, y.predicted_band) for x, y in pairs]
        bands = np.array([(p, q) for p, q in both if p is not None and q is not None], dtype=float).reshape(-1, 2)
        diff = bands[:, 0] - bands[:, 1]
        flips = int(np.count_nonzero(diff))
        comparisons.append(
            PairedComparison(
                attribute=attribute,
                group_a=a,
                group_b=b,
                n_pairs=len(diff),
                n_flips=flips,
                flip_rate=flips / len(diff) if len(diff) else float("nan"),
                flip_rate_ci=wilson_interval(flips, len(diff), config.confidence_level) if len(diff) else None,
                a_higher=int(np.count_nonzero(diff > 0)),
                b_higher=int(np.count_nonzero(diff < 0)),
                mean_difference=float(diff.mean()) if len(diff) else float("nan"),
                a_right_b_wrong=right_wrong,
                a_wrong_b_right=wrong_right,
            )
        )
        label = f"{a} vs {b}"
        mc = mcnemar_from_counts(right_wrong, wrong_right, exact=True)
        tests.append(
            _test(attribute, "mcnemar_exact", (a, b), GroupTest(mc.statistic, mc.p_value, None, "exact"), label)
        )
        if len(diff):
            tests.append(
                _test(attribute, "wilcoxon_signed_rank", (a, b), wilcoxon_signed_rank(bands[:, 0], bands[:, 1]), label)
            )
    return comparisons, tests


# ---------------------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------------------


_HEADLINE_ORDER = ("wilcoxon_signed_rank", "kruskal_wallis", "chi_square_direction", "mcnemar_exact")


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _verdict(
    attribute: str,
    tests: Sequence[TestResult],
    groups: Sequence[GroupMetrics],
    paired: Sequence[PairedComparison],
    config: FairnessConfig,
) -> Verdict:
    name = "Holm" if config.correction == "holm" else "Benjamini-Hochberg"
    mine = [t for t in tests if t.attribute == attribute]
    if not mine:
        return Verdict(
            attribute,
            False,
            f"{attribute}: not tested (fewer than two groups with at least {config.min_cell_size} valid answers).",
        )

    def adjusted(t: TestResult) -> float:
        return t.p_holm if config.correction == "holm" else t.p_bh

    def rejected(t: TestResult) -> bool:
        return t.reject_holm if config.correction == "holm" else t.reject_bh

    found = [t for t in mine if rejected(t)]
    if not found:
        best = min(adjusted(t) for t in mine)
        return Verdict(
            attribute,
            False,
            f"{attribute}: no evidence of a difference after correction "
            f"(smallest {name}-corrected p = {_fmt_p(best)}).",
        )
    # The headline prefers the paired comparison (it says which group and by how much on the same profiles),
    # then the omnibus tests of placement, and a test of correctness last.
    head = min(found, key=lambda t: (_HEADLINE_ORDER.index(t.test), adjusted(t)))
    p_text = f"{name}-corrected p = {_fmt_p(adjusted(head))}"
    if head.test == "wilcoxon_signed_rank":
        cmp = next(c for c in paired if c.attribute == attribute and (c.group_a, c.group_b) == head.groups)
        high, low, gap = (cmp.group_a, cmp.group_b, cmp.mean_difference)
        if gap < 0:
            high, low, gap = low, high, -gap
        sentence = (
            f"{attribute}: {high} was placed {gap:.2f} bands higher than {low} on the same profiles "
            f"({p_text}, Wilcoxon signed-rank)."
        )
    elif head.test == "mcnemar_exact":
        cmp = next(c for c in paired if c.attribute == attribute and (c.group_a, c.group_b) == head.groups)
        better, worse = (
            (cmp.group_a, cmp.group_b) if cmp.a_right_b_wrong > cmp.a_wrong_b_right else (cmp.group_b, cmp.group_a)
        )
        sentence = f"{attribute}: {better} got the right band more often than {worse} on the same profiles ({p_text})."
    else:
        scored = [
            g for g in groups if g.attribute == attribute and g.group in head.groups and g.signed_error is not None
        ]
        high_g = max(scored, key=lambda g: g.signed_error or 0.0)
        low_g = min(scored, key=lambda g: g.signed_error or 0.0)
        gap = (high_g.signed_error or 0.0) - (low_g.signed_error or 0.0)
        test_name = "Kruskal-Wallis" if head.test == "kruskal_wallis" else "chi-square on direction"
        sentence = (
            f"{attribute}: {high_g.group} was placed {gap:.2f} bands higher than {low_g.group} ({p_text}, {test_name})."
        )
    return Verdict(attribute, True, sentence, head.test_id)


# ---------------------------------------------------------------------------------------------------------------
# The audit
# ---------------------------------------------------------------------------------------------------------------


def _check_rows(rows: Sequence[FairnessRow], config: FairnessConfig) -> None:
    if not rows:
        raise ConfigError("the fairness audit got no rows; run the experiment's answers stage first")
    for row in rows:
        missing = [a for a in config.attributes if a not in row.groups]
        if missing:
            raise ConfigError(
                f"row {row.item_id!r} has no group for attribute(s) {missing} (it has {sorted(row.groups)}); "
                "set FairnessConfig.attributes to attributes every row carries"
            )
        if row.predicted_band is not None and not isinstance(row.predicted_band, int):
            raise ConfigError(f"row {row.item_id!r}: predicted_band {row.predicted_band!r} must be an int or None")


def audit(rows: Sequence[FairnessRow], config: FairnessConfig | None = None) -> FairnessAudit:
    """Audit ``rows`` for differences between groups (see the module docstring); deterministic for a seed."""
    config = config or FairnessConfig()
    _check_rows(rows, config)
    analyses: list[tuple[str, tuple[str, ...]]] = [(a, (a,)) for a in config.attributes]
    if config.intersectional and len(config.attributes) > 1:
        analyses.append((INTERSECTION_SEPARATOR.join(config.attributes), config.attributes))

    group_metrics: list[GroupMetrics] = []
    raw_tests: list[TestResult] = []
    effects: list[EffectSize] = []
    paired: list[PairedComparison] = []
    warnings: list[str] = []
    for index, (name, attributes) in enumerate(analyses):
        parts = _partition(rows, attributes)
        metrics = [_group_metrics(name, group, members, config) for group, members in parts.items()]
        group_metrics.extend(metrics)
        testable = [m.group for m in metrics if not m.too_small]
        small = [f"{m.group} ({m.n_valid})" for m in metrics if m.too_small]
        if small:
            warnings.append(
                f"{name}: group(s) {', '.join(small)} have fewer than {config.min_cell_size} valid answers; "
                "reported, not tested"
            )
        raw_tests.extend(_omnibus_tests(name, parts, testable, config, salt=100 + index))
        if len(attributes) == 1:
            effects.extend(_effect_sizes(name, parts, testable, config))
            comparisons, pair_tests = _paired(name, rows, testable, config)
            paired.extend(comparisons)
            raw_tests.extend(pair_tests)
    warnings.extend(f"{t.test_id}: {t.note}" for t in raw_tests if t.note and t.method == "monte-carlo")

    adjusted = adjust_pvalues([t.p_value for t in raw_tests], config.alpha)
    tests = tuple(
        replace(t, p_holm=ph, p_bh=pb, reject_holm=rh, reject_bh=rb)
        for t, ph, pb, rh, rb in zip(
            raw_tests, adjusted.p_holm, adjusted.p_bh, adjusted.reject_holm, adjusted.reject_bh, strict=True
        )
    )
    verdicts = tuple(_verdict(name, tests, group_metrics, paired, config) for name, _ in analyses)
    return FairnessAudit(
        config=config,
        n_rows=len(rows),
        groups=tuple(group_metrics),
        tests=tests,
        effect_sizes=tuple(effects),
        paired=tuple(paired),
        verdicts=verdicts,
        warnings=tuple(warnings),
    )
