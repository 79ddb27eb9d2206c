"""What a person sees: the report rounds for reading (JSON keeps full precision), the run's resource use, the
progress line's ETA, and the report's Markdown on the report asset in the Dagster UI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jobs.cli import main
from pipeline.report import readable

LONG_DECIMAL = re.compile(r"\d\.\d{5,}")
"""A number with more than 4 decimals: what the report used to print (4.92467079000005 s)."""


def run_folder(home: Path, experiment: str) -> Path:
    return next((home / "runs").glob(f"{experiment}-*"))


@pytest.mark.parametrize("experiment", ["hello", "hello-judge"])
def test_report_markdown_has_no_long_decimals_and_json_keeps_precision(assay_env: Path, experiment: str) -> None:
    flags = ["--set", "judge.models=[fake]"] if experiment == "hello-judge" else []
    assert main(["run", experiment, "--model", "fake", *flags]) == 0
    folder = run_folder(assay_env, experiment)
    markdown = (folder / "outputs" / "final_report.md").read_text()
    assert not LONG_DECIMAL.findall(markdown), LONG_DECIMAL.findall(markdown)
    assert re.search(r"latency p50/p95: [\d.]+ m?s / [\d.]+ m?s", markdown)
    timing = json.loads((folder / "outputs" / "timing.json").read_text())
    p50 = timing["latency_s"]["p50"]
    assert isinstance(p50, float) and p50 > 0  # the JSON keeps the unrounded figure


def test_run_summary_and_report_carry_the_resource_use(assay_env: Path) -> None:
    assert main(["run", "hello", "--model", "fake"]) == 0
    folder = run_folder(assay_env, "hello")
    resources = json.loads((folder / "metadata" / "run_summary.json").read_text())["resources"]
    assert resources["cpu_s"] > 0
    assert resources["peak_rss_bytes"] > 10_000_000  # a Python process with Dagster loaded
    assert resources["run_folder_bytes"] > 0
    assert resources["store_bytes"] > 0  # hello's 10 answers are stored
    markdown = (folder / "outputs" / "final_report.md").read_text()
    line = next(line for line in markdown.splitlines() if line.startswith("- resources:"))
    assert "CPU" in line and "peak memory" in line and "run folder" in line and "store" in line


def test_readable_formats() -> None:
    assert readable.seconds(4.92467079000005) == "4.92 s"
    assert readable.seconds(52.609977661000016) == "52.6 s"
    assert readable.seconds(0.000123) == "0.12 ms"
    assert readable.seconds(None) == "n/a"
    assert readable.duration(200) == "3m20s"
    assert readable.duration(7500) == "2h05m"
    assert readable.duration(9.6) == "10s"
    assert readable.usd(0.00012345) == "$0.0001"
    assert readable.usd(1234.5) == "$1,234.50"
    assert readable.percent(0.87654) == "87.7%"


def test_progress_shows_the_pace_and_a_readable_eta() -> None:
    from jobs.launcher import pace_and_eta

    assert pace_and_eta(50, 250, 20.0) == "2.5 calls/s, eta 1m20s"
    assert pace_and_eta(3, 43, 15.0) == "5.0 s/call, eta 3m20s"  # a slow local model: s/call, not "0/s"
    assert pace_and_eta(0, 10, 1.0) == "eta ?"


def test_run_prints_the_eta_on_its_progress_line(assay_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hello", "--model", "fake"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"llm calls (\d+)/\1, [\d.]+ (calls/s|s/call), eta 0s, spend \$", out), out


def test_report_asset_carries_its_markdown_and_assets_their_owners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import AssetKey, DagsterInstance, MarkdownMetadataValue, materialize

    from assets.experiment import build_experiment_definitions
    from resources.assay import AssayResource, NullIOManager

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "configs" / "experiments" / "hello.yaml").read_text()
    config = tmp_path / "hello.yaml"
    config.write_text(text + "\nowners: [team:evals, ada@example.com]\n")
    monkeypatch.setenv("ASSAY_RUNS_DIR", str(tmp_path / "runs"))
    definitions = build_experiment_definitions(str(config))
    prefix = definitions.config.asset_prefix
    for asset_def in definitions.assets:
        for spec in asset_def.specs:
            assert set(spec.owners) == {"team:evals", "ada@example.com"}, spec.key
    resources = {
        "assay": AssayResource(overrides=["models=[fake]"], home=str(tmp_path), calls="replay"),
        "assay_null_io": NullIOManager(),
    }
    everything = [*definitions.assets, *definitions.checks]
    with DagsterInstance.ephemeral() as instance:
        for segment in definitions.graph.segments():
            selections = [list(segment.assets)]
            if segment.call_stage is not None:
                selections.append([segment.call_stage.responses_asset])
            for names in selections:
                if names:
                    selection = [f"{prefix}/{name}" for name in names]
                    materialize(everything, selection=selection, resources=resources, instance=instance)
        report_event = instance.get_latest_materialization_event(AssetKey([prefix, "report"]))
        assert report_event is not None and report_event.asset_materialization is not None
        metadata = report_event.asset_materialization.metadata
        markdown = metadata["report_markdown"]
        assert isinstance(markdown, MarkdownMetadataValue)
        assert markdown.value is not None and markdown.value.startswith("# hello: results")
        assert "![confusion matrix" not in markdown.value or "data:image/png;base64," in markdown.value
        plan_key = AssetKey([prefix, definitions.graph.call_stages[0].plan_asset])
        plan_event = instance.get_latest_materialization_event(plan_key)
        assert plan_event is not None and plan_event.asset_materialization is not None
        plan_metadata = plan_event.asset_materialization.metadata
        for name in ("calls", "already_stored", "calls_to_send", "estimated_cost_usd", "spent_usd"):
            assert name in plan_metadata, name


def test_owners_must_be_teams_or_emails(tmp_path: Path) -> None:
    from pipeline.config import load_experiment
    from pipeline.llm.errors import ConfigError

    repo = Path(__file__).resolve().parents[1]
    config = tmp_path / "hello.yaml"
    config.write_text((repo / "configs" / "experiments" / "hello.yaml").read_text() + "\nowners: [evals]\n")
    with pytest.raises(ConfigError, match="team:<name>' or an email address as an owner, found 'evals'"):
        load_experiment(str(config))
