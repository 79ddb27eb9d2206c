"""The fairness report: verdicts first, tables, PNG plots referenced from the Markdown, a JSON-ready summary."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.profiles import ProfileSampleConfig, generate_variants
from pipeline.data.risk_prompt import USER_TEMPLATE, fairness_row, prompt_fields
from pipeline.prompts import render
from pipeline.report.fairness import PLOT_FILES, fairness_summary, write_fairness_report
from pipeline.stats.fairness import FairnessAudit, FairnessConfig, audit
from tests.fakes.risk_responder import make_biased_responder


def _audit() -> FairnessAudit:
    responder = make_biased_responder("ethnicity=black", fraction=0.5, seed=1, noise=0.1)
    rows = []
    for variant in generate_variants(ProfileSampleConfig(n_profiles=24, seed=1)):
        answer = json.loads(
            responder({"messages": [{"role": "user", "content": render(USER_TEMPLATE, prompt_fields(variant))}]})
        )
        rows.append(fairness_row(variant, answer))
    return audit(rows, FairnessConfig(min_cell_size=10, bootstrap_resamples=100, monte_carlo_resamples=300))


def test_report_writes_plots_and_puts_verdicts_first(tmp_path: Path) -> None:
    result = _audit()
    lines = write_fairness_report(result, tmp_path)
    text = "\n".join(lines)
    assert lines[2] == "### Verdicts"
    assert "**ethnicity: black was placed" in lines[5]
    assert text.index("### Verdicts") < text.index("### Groups") < text.index("### Tests") < text.index("### Plots")
    assert "| Holm p | BH p |" in text
    for name in PLOT_FILES.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_summary_is_json_ready(tmp_path: Path) -> None:
    summary = fairness_summary(_audit())
    loaded = json.loads(json.dumps(summary, allow_nan=False))
    assert loaded["fairness"]["format_version"] == 1
    assert loaded["fairness"]["verdicts"][1]["attribute"] == "ethnicity"
