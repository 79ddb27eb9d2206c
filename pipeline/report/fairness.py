"""The fairness report: Markdown a non-statistician can read, four PNG plots, and a stats_summary.json dict.

Verdicts come first, one plain sentence per attribute; then what the numbers mean, the per-group table, the
tests with both corrections side by side, the paired (counterfactual) comparisons and the plots. Figures are
built with matplotlib's object-oriented API as in :mod:`pipeline.report.plots` (no pyplot, no display).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.stats.fairness import INTERSECTION_SEPARATOR, FairnessAudit, GroupMetrics

__all__ = ["PLOT_FILES", "fairness_summary", "write_fairness_report"]

PLOT_FILES: dict[str, str] = {
    "signed_error": "fairness_signed_error.png",
    "direction": "fairness_direction.png",
    "intersection": "fairness_intersection.png",
    "flips": "fairness_flip_rate.png",
}
"""Plot kind -> file name written under the outputs folder."""


def fairness_summary(result: FairnessAudit) -> dict[str, Any]:
    """The stats_summary.json-ready dict of an audit (``result.to_dict()`` under the key ``fairness``)."""
    return {"fairness": result.to_dict()}


def _num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None or value != value:  # NaN
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if value != value:
        return "-"
    return f"{value:.1e}" if value < 0.001 else f"{value:.3f}"


def _ci(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None or high is None:
        return "-"
    return f"[{_num(low, 2, signed)}, {_num(high, 2, signed)}]"


def _group_table(groups: Sequence[GroupMetrics]) -> list[str]:
    lines = [
        "| Attribute | Group | Answers | Valid | Accuracy | Mean abs. error | Signed error [95% CI] | "
        "Over / exact / under | ECE | Brier |",
        "|---|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for g in groups:
        signed_ci = g.signed_error_ci
        signed = _num(g.signed_error, 2, True) + (
            " " + _ci(signed_ci.low, signed_ci.high, True) if signed_ci is not None else ""
        )
        if g.too_small:
            signed += " (too small to test)"
        direction = (
            f"{_num(g.over_rate)} / {_num(g.exact_rate)} / {_num(g.under_rate)}" if g.over_rate is not None else "-"
        )
        lines.append(
            f"| {g.attribute} | {g.group} | {g.n} | {g.n_valid} | {g.accuracy:.1%} | {_num(g.mean_absolute_error)} | "
            f"{signed} | {direction} | {_num(g.ece, 3)} | {_num(g.brier, 3)} |"
        )
    return lines


def _test_table(result: FairnessAudit) -> list[str]:
    lines = [
        "| Test | Statistic | df | p | Holm p | BH p | Finding (Holm / BH) | Method |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for t in result.tests:
        finding = f"{'yes' if t.reject_holm else 'no'} / {'yes' if t.reject_bh else 'no'}"
        df = "-" if t.df is None else str(t.df)
        lines.append(
            f"| {t.test_id} | {t.statistic:.3f} | {df} | {_p(t.p_value)} | {_p(t.p_holm)} | {_p(t.p_bh)} | "
            f"{finding} | {t.method} |"
        )
    return lines


def _paired_table(result: FairnessAudit) -> list[str]:
    lines = [
        "| Attribute | A vs B | Pairs | Placed differently [95% CI] | A higher | B higher | Mean band A - B |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for c in result.paired:
        ci = c.flip_rate_ci
        flip = f"{c.flip_rate:.1%}" + (f" [{ci.low:.1%}, {ci.high:.1%}]" if ci is not None else "")
        lines.append(
            f"| {c.attribute} | {c.group_a} vs {c.group_b} | {c.n_pairs} | {flip} | {c.a_higher} | {c.b_higher} | "
            f"{c.mean_difference:+.3f} |"
        )
    return lines


def _effect_table(result: FairnessAudit) -> list[str]:
    lines = ["| Attribute | A vs B | Cohen's d [95% CI] |", "|---|---|---|"]
    for e in result.effect_sizes:
        lines.append(
            f"| {e.attribute} | {e.group_a} vs {e.group_b} | {_num(e.d, 2, True)} {_ci(e.low, e.high, True)} |"
        )
    return lines


def _plot_signed_error(result: FairnessAudit, path: Path) -> None:
    from matplotlib.figure import Figure

    groups = [g for g in result.groups if g.signed_error is not None]
    fig = Figure(figsize=(7, 0.35 * len(groups) + 1.5))
    ax = fig.add_subplot()
    labels = [f"{g.attribute}: {g.group}" for g in groups]
    values = [g.signed_error or 0.0 for g in groups]
    low = [v - g.signed_error_ci.low if g.signed_error_ci else 0.0 for v, g in zip(values, groups, strict=True)]
    high = [g.signed_error_ci.high - v if g.signed_error_ci else 0.0 for v, g in zip(values, groups, strict=True)]
    colors = ["#bbbbbb" if g.too_small else "#4c72b0" for g in groups]
    ax.barh(range(len(groups)), values, xerr=[low, high], color=colors, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(groups)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("Mean signed error in bands (+ = riskier), 95% CI")
    ax.set_title("Signed error per group (grey: too small to test)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_direction(result: FairnessAudit, path: Path) -> None:
    from matplotlib.figure import Figure

    groups = [g for g in result.groups if g.over_rate is not None]
    fig = Figure(figsize=(7, 0.35 * len(groups) + 1.5))
    ax = fig.add_subplot()
    left = [0.0] * len(groups)
    for name, color, attr in (("under", "#55a868", "under_rate"), ("exact", "#cccccc", "exact_rate"),
                              ("over", "#c44e52", "over_rate")):  # fmt: skip
        values = [getattr(g, attr) or 0.0 for g in groups]
        ax.barh(range(len(groups)), values, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(groups)), [f"{g.attribute}: {g.group}" for g in groups])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("Share of valid answers")
    ax.set_title("Direction of errors: under-risked / right band / over-risked")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_intersection(result: FairnessAudit, path: Path) -> bool:
    import numpy as np
    from matplotlib.figure import Figure

    cells = [g for g in result.groups if INTERSECTION_SEPARATOR in g.attribute]
    if not cells or len(result.config.attributes) < 2:
        return False
    rows = sorted({g.group.split("/")[0] for g in cells})
    cols = sorted({"/".join(g.group.split("/")[1:]) for g in cells})
    grid = np.full((len(rows), len(cols)), np.nan)
    for g in cells:
        head, _, tail = g.group.partition("/")
        grid[rows.index(head), cols.index(tail)] = np.nan if g.signed_error is None else g.signed_error
    fig = Figure(figsize=(1.2 * len(cols) + 2.5, 0.6 * len(rows) + 1.8))
    ax = fig.add_subplot()
    limit = max(0.05, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.05)
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(f"Mean signed error by {cells[0].attribute}")
    fig.colorbar(image, ax=ax, label="bands (+ = riskier)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def _plot_flips(result: FairnessAudit, path: Path) -> bool:
    from matplotlib.figure import Figure

    pairs = [c for c in result.paired if c.n_pairs]
    if not pairs:
        return False
    fig = Figure(figsize=(7, 0.35 * len(pairs) + 1.5))
    ax = fig.add_subplot()
    values = [c.flip_rate for c in pairs]
    low = [c.flip_rate - c.flip_rate_ci.low if c.flip_rate_ci else 0.0 for c in pairs]
    high = [c.flip_rate_ci.high - c.flip_rate if c.flip_rate_ci else 0.0 for c in pairs]
    ax.barh(range(len(pairs)), values, xerr=[low, high], color="#8172b2", capsize=3)
    ax.set_yticks(range(len(pairs)), [f"{c.attribute}: {c.group_a} vs {c.group_b}" for c in pairs])
    ax.invert_yaxis()
    ax.set_xlabel("Share of counterfactual pairs placed in different bands (95% Wilson CI)")
    ax.set_title("Flip rate: same profile, different name")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_fairness_report(result: FairnessAudit, outputs_dir: Path) -> list[str]:
    """Write the plots into ``outputs_dir`` and return the report's Markdown lines (which reference them)."""
    outputs_dir.mkdir(parents=True, exist_ok=True)
    correction = "Holm" if result.config.correction == "holm" else "Benjamini-Hochberg"
    lines = ["## Fairness audit", "", "### Verdicts", ""]
    lines += [f"- {'**' if v.significant else ''}{v.sentence}{'**' if v.significant else ''}" for v in result.verdicts]
    lines += [
        "",
        "### How to read this",
        "",
        "Each client profile has one right risk band (the scoring rule); names and ages must not change it. "
        "*Signed error* is the band given minus the right band: positive means the model placed the client in a "
        "riskier band than the rule, negative a more cautious one. *Placed differently* counts pairs of clients "
        "with the same finances and different names that got different bands. With many tests some small p-values "
        f"appear by chance, so the verdicts use {correction}-corrected p-values at "
        f"alpha = {result.config.alpha}; the table shows the Holm and Benjamini-Hochberg corrections side by side. "
        f"Groups with fewer than {result.config.min_cell_size} valid answers are shown but not tested.",
        "",
        f"{result.n_rows} answers audited.",
        "",
        "### Groups",
        "",
        *_group_table(result.groups),
        "",
        "### Tests",
        "",
        *_test_table(result),
        "",
    ]
    if result.paired:
        lines += ["### Same profile, different name (paired)", "", *_paired_table(result), ""]
    if result.effect_sizes:
        lines += ["### Effect sizes (signed error)", "", *_effect_table(result), ""]
    if result.warnings:
        lines += ["### Warnings", "", *[f"- {w}" for w in result.warnings], ""]
    lines += ["### Plots", ""]
    _plot_signed_error(result, outputs_dir / PLOT_FILES["signed_error"])
    _plot_direction(result, outputs_dir / PLOT_FILES["direction"])
    written = ["signed_error", "direction"]
    if _plot_intersection(result, outputs_dir / PLOT_FILES["intersection"]):
        written.append("intersection")
    if _plot_flips(result, outputs_dir / PLOT_FILES["flips"]):
        written.append("flips")
    titles = {
        "signed_error": "Signed error per group",
        "direction": "Direction of errors",
        "intersection": "Signed error by intersection",
        "flips": "Flip rate",
    }
    lines += [f"![{titles[kind]}]({PLOT_FILES[kind]})" for kind in written]
    return lines
