"""`assay audit verify` and `assay store ...` on a real run: tampering is detected, gc keeps what plans need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.cli import main
from pipeline.context import ExperimentContext
from tests.fakes.openai_server import FakeOpenAIServer


@pytest.mark.slow
def test_audit_log_detects_an_edited_record_and_a_deleted_line(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "hello", "--model", "fake"]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "hello"]) == 0
    assert "intact" in capsys.readouterr().out
    log = assay_env / "home" / "audit" / "hello.jsonl"
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[:2] == ["run_started", "config_hash"] and "calls_stored" in events and "report_written" in events

    store = ExperimentContext("hello", ["models=[fake]"]).store
    path = next(store.records_dir.glob("*/*.json"))
    record = json.loads(path.read_text())
    record["text"] = record["text"].replace("sports", "weather") + " "  # an edit, checksum field left alone
    path.write_text(json.dumps(record))
    assert main(["audit", "verify", "hello"]) == 1
    assert path.stem in capsys.readouterr().out

    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # a deleted line breaks the chain
    assert main(["audit", "verify", "hello"]) == 1
    assert "line 2" in capsys.readouterr().out


@pytest.mark.slow
def test_store_commands_verify_gc_and_export(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "hello", "--model", "fake"]) == 0
    capsys.readouterr()
    assert main(["store", "stats"]) == 0
    assert "8 records" in capsys.readouterr().out
    assert main(["store", "verify"]) == 0
    assert "8/8 records verified" in capsys.readouterr().out
    assert main(["store", "gc", "--older-than", "0"]) == 0  # everything is old, but the plan needs all of it
    assert "deleted 0 records" in capsys.readouterr().out
    store = ExperimentContext("hello", ["models=[fake]"]).store
    assert len(store.stored_ids()) == 8
    assert main(["store", "export", "hello", str(assay_env / "exported")]) == 0
    assert len(list((assay_env / "exported" / "records").glob("*/*.json"))) == 8
    path = next(store.records_dir.glob("*/*.json"))
    path.write_text(path.read_text().replace('"cost_usd"', '"cost_usd" ', 1)[:-5])  # corrupt it
    assert main(["store", "verify"]) == 1
    assert path.stem in capsys.readouterr().out
