"""The assign-cat experiment: products -> (category, subcategory) of the taxonomy, end to end through `assay run`.

The end-to-end tests drive `jobs.cli.main` on a fresh Dagster instance and store under tmp_path, against the
in-process fake OpenAI server with a responder that reads the products out of the prompt and answers their
gold pair, or on demand a valid but wrong pair or a pair that does not exist, so accuracy, repair and
compare are measured on real answers. The unit tests at the top run without a server.
"""

from __future__ import annotations

import csv
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from jobs.cli import main
from jobs.instance import sqlite_instance_yaml
from pipeline.config import REPO_ROOT, load_experiment, load_model_zoo
from pipeline.data.products import load_products_csv
from pipeline.experiments import experiment_for
from pipeline.experiments.assign_cat import AssignCatExperiment, answer_tokens
from pipeline.llm.errors import ConfigError
from pipeline.plan import PlannedCall
from tests.conftest import fake_alias_flag
from tests.fakes.openai_server import FakeOpenAIServer

PRODUCTS_CSV = REPO_ROOT / "datasets" / "assign-cat" / "products.csv"
TAXONOMY_XML = REPO_ROOT / "datasets" / "assign-cat" / "taxonomy.xml"
SECRET = "sk-test-SECRET-assigncat-1234567890"
SINGLE_TITLE = "Echinacea Immune Support"
NONEXISTENT = {"category": "immune-support", "subcategory": "melatonin-sleep"}  # melatonin-sleep is a sleep one
RUN_FOLDER_FILES = {
    "inputs/products.json",
    "inputs/taxonomy.xml",
    "inputs/prompt_templates.json",
    "config/models.yaml",
    "config/run_config.json",
    "config/system_info.json",
    "outputs/classifications.csv",
    "outputs/token_usage.json",
    "outputs/timing.json",
    "outputs/errors.log",
    "metadata/run_summary.json",
}
CSV_COLUMNS = ["product_id", "title", "category", "subcategory", "valid", "raw_response", "model_used"]


# ---------------------------------------------------------------------------------------------------------
# Unit tests: no server, no Dagster


@pytest.fixture(scope="module")
def experiment() -> AssignCatExperiment:
    exp = experiment_for(load_experiment("assign-cat"))
    assert isinstance(exp, AssignCatExperiment)
    return exp


def test_shipped_products_load_with_gold_pairs(experiment: AssignCatExperiment) -> None:
    item_set = experiment.load_items()
    assert len(item_set.items) == 141 and item_set.errors == []
    first = item_set.items[0]
    assert first.item_id == "P0001" and first.gold == "immune-support/daily-immune"
    assert first.fields["title"] == "Buffered Vitamin C 500mg Gentle Capsules"
    assert "gold_category" not in first.fields and "gold_subcategory" not in first.fields  # never in a prompt
    assert all(experiment.taxonomy.has_pair(*str(item.gold).split("/")) for item in item_set.items)


def test_prompt_offers_the_taxonomy_and_the_product(experiment: AssignCatExperiment) -> None:
    item = experiment.load_items().items[0]
    system, user = experiment.messages_for([item])
    assert "immune-support (Immune Support)" in system["content"]
    assert "  - daily-immune (Daily Immune)" in system["content"]
    assert f"Product: {item.fields['title']}" in user["content"]
    assert "immune-support" not in user["content"]  # the gold pair does not leak into the prompt


def test_pair_rule_catches_pairs_that_do_not_exist_and_names_the_choices(experiment: AssignCatExperiment) -> None:
    assert experiment.pair_problem({"category": "immune-support", "subcategory": "daily-immune"}) is None
    reason = experiment.pair_problem(NONEXISTENT)
    assert reason is not None and "belongs to category 'sleep-relaxation'" in reason and "daily-immune" in reason
    assert "choose one of: immune-support" in str(experiment.pair_problem({"category": "x", "subcategory": "y"}))
    assert "does not exist in category" in str(
        experiment.pair_problem({"category": "immune-support", "subcategory": "nope"})
    )
    assert "id strings" in str(experiment.pair_problem({"category": 3, "subcategory": None}))
    # The constrained-decoding schema admits exactly the existing pairs.
    schema = experiment.answer_schema()
    assert schema["type"] == "object" and len(schema["anyOf"]) == len(experiment.taxonomy.categories)
    jsonschema.validate({"category": "immune-support", "subcategory": "cold-season"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(NONEXISTENT, schema)


def test_interpret_validates_pairs_even_when_the_model_ignores_the_format(experiment: AssignCatExperiment) -> None:
    items = experiment.load_items().items[:1]
    call = experiment.plan(items, ["fake"], load_model_zoo()).calls[0]
    good = experiment.interpret(
        call, 'Sure! ```json\n{"category": "immune-support", "subcategory": "daily-immune"}```', "m"
    )
    assert good[0].valid and good[0].label == "immune-support/daily-immune"
    bad = experiment.interpret(call, json.dumps(NONEXISTENT), "m")
    assert not bad[0].valid and "belongs to category 'sleep-relaxation'" in bad[0].reason
    prose = experiment.interpret(call, "It is an immune product.", "m")
    assert not prose[0].valid and "no JSON object" in prose[0].reason


def test_batch_answers_are_matched_back_by_item_id() -> None:
    exp = experiment_for(load_experiment("assign-cat", ["run.items_per_prompt=3"]))
    items = exp.load_items().items[:3]
    call: PlannedCall = exp.plan(items, ["fake"], load_model_zoo()).calls[0]
    assert call.item_ids == ("P0001", "P0002", "P0003")
    assert "[P0002] Biotin 10000mcg Hair Growth." in call.spec.messages[-1]["content"]
    # Answers in reverse order, one of them a pair that does not exist.
    entries = [
        {"item_id": "P0003", "category": "heart-cardio", "subcategory": "cholesterol-support"},
        {"item_id": "P0002", **NONEXISTENT},
        {"item_id": "P0001", "category": "immune-support", "subcategory": "daily-immune"},
    ]
    answers = {a.item_id: a for a in exp.interpret(call, json.dumps({"answers": entries}), "m")}
    assert answers["P0001"].label == "immune-support/daily-immune" and answers["P0001"].valid
    assert answers["P0003"].label == "heart-cardio/cholesterol-support"
    assert not answers["P0002"].valid
    # One shared entry schema (not one copy per item), still limited to existing pairs and the batch's ids.
    schema = exp.batch_schema(call.item_ids)
    assert schema is not None
    jsonschema.validate({"answers": entries[:1] + entries[2:] + entries[:1]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answers": entries}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answers": [{**entries[0], "item_id": "P0099"}, entries[0], entries[2]]}, schema)
    missing = {a.item_id: a for a in exp.interpret(call, json.dumps({"answers": entries[:1]}), "m")}
    assert "no entry for item 'P0001'" in missing["P0001"].reason
    # A local model (schema free: a grammar, not prompt tokens) gets each position fixed to its product.
    [local_call] = exp.plan(items, ["local"], load_model_zoo()).calls
    assert local_call.spec.response_format is not None
    local_schema = local_call.spec.response_format["json_schema"]["schema"]
    prefix = local_schema["properties"]["answers"]["prefixItems"]
    assert [entry["anyOf"][0]["properties"]["item_id"] for entry in prefix] == [
        {"const": "P0001"},
        {"const": "P0002"},
        {"const": "P0003"},
    ]
    jsonschema.validate(
        {"answers": [entries[2], {**entries[1], **entries[0], "item_id": "P0002"}, entries[0]]}, local_schema
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answers": list(reversed(entries))}, local_schema)
    both = exp.plan(items, ["local", "fake"], load_model_zoo()).calls
    assert [c.spec.alias for c in both] == ["local", "fake"] and "prefixItems" not in json.dumps(
        both[1].spec.response_format
    )


def test_bad_csv_rows_are_reported_with_their_row_numbers(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "catalog.csv")
    exp = experiment_for(load_experiment("assign-cat", [f"dataset.path={path}", "dataset.loader=csv"]))
    item_set = exp.load_items()
    assert [item.item_id for item in item_set.items] == ["P0001", "P0002", "P0003", "P0004"]
    assert [(error.row_number, error.reason.split(" ")[0]) for error in item_set.errors] == [
        (3, "title"),
        (5, "has"),
        (7, "duplicate"),
    ]


def test_configuration_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs dataset.taxonomy"):
        experiment_for(load_experiment("assign-cat", ["dataset.taxonomy=null"]))
    with pytest.raises(ConfigError, match="does not exist"):
        experiment_for(load_experiment("assign-cat", [f"dataset.taxonomy={tmp_path / 'none.xml'}"]))
    with pytest.raises(ConfigError, match="use dataset.loader=products_csv"):
        experiment_for(load_experiment("assign-cat", ["dataset.loader=jsonl"])).load_items()
    with pytest.raises(ConfigError, match="--single-product"):
        experiment_for(load_experiment("assign-cat", ['dataset.single_item=" "'])).load_items()
    bad_gold = tmp_path / "bad_gold.csv"
    bad_gold.write_text("product_id,title,gold_category,gold_subcategory\nP1,Zinc,immune-support,melatonin-sleep\n")
    with pytest.raises(ConfigError, match="is not in taxonomy"):
        experiment_for(load_experiment("assign-cat", [f"dataset.path={bad_gold}"])).load_items()


def test_extra_metrics_score_category_and_subcategory_levels(experiment: AssignCatExperiment) -> None:
    gold = {"a": "immune-support/daily-immune", "b": "immune-support/cold-season", "c": "heart-cardio/blood-pressure"}
    rows = [
        {"item_id": "a", "label": "immune-support/daily-immune"},  # both levels right
        {"item_id": "b", "label": "immune-support/daily-immune"},  # category right only
        {"item_id": "c", "label": None},  # invalid: wrong at both levels
    ]
    metrics = experiment.extra_metrics(rows, gold)
    assert metrics["category_correct"] == 2 and metrics["subcategory_correct"] == 1
    assert metrics["category_accuracy"]["estimate"] == pytest.approx(2 / 3)
    assert metrics["subcategory_accuracy"]["method"] == "wilson"


def test_token_estimate_counts_prompts_and_expected_answers(experiment: AssignCatExperiment) -> None:
    items = experiment.load_items().items[:4]
    estimate = experiment.estimate_tokens(items, "gpt4o_mini", load_model_zoo())
    assert estimate.calls == 4 and estimate.method == "tiktoken:o200k_base"
    assert estimate.prompt_tokens > 4 * 1700  # the taxonomy alone is ~1,700 tokens per prompt
    assert 4 * 10 < estimate.completion_tokens < estimate.max_completion_tokens
    assert answer_tokens("openai/gpt-4o-mini", '{"category": "x"}') == 6


# ---------------------------------------------------------------------------------------------------------
# The fake model and the end-to-end harness


def wrong_pair(experiment: AssignCatExperiment, gold: str) -> dict[str, str]:
    """A pair that exists but is not `gold`."""
    for pair in experiment.taxonomy.pairs():
        if "/".join(pair) != gold:
            return {"category": pair.category, "subcategory": pair.subcategory}
    raise AssertionError("taxonomy has a single pair")


@dataclass
class Request:
    """What the responder saw: the products of the prompt, whether it was a repair, the messages."""

    product_ids: list[str]
    repair: bool
    messages: list[dict[str, Any]]


@dataclass
class CatalogResponder:
    """Answers like a perfect model, except for the products put in `wrong` / `nonexistent`."""

    experiment: AssignCatExperiment
    gold: dict[str, str]
    id_by_title: dict[str, str]
    wrong: set[str] = field(default_factory=set)
    nonexistent: set[str] = field(default_factory=set)
    """Answered with a pair that does not exist; on the repair call the gold pair unless also in `stubborn`."""
    stubborn: set[str] = field(default_factory=set)
    reverse_batches: bool = False
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.wrong, self.nonexistent, self.stubborn = set(), set(), set()
        self.reverse_batches = False
        self.requests = []

    def pair(self, product_id: str, repair: bool) -> dict[str, str]:
        if product_id in self.nonexistent and (not repair or product_id in self.stubborn):
            return dict(NONEXISTENT)
        gold = self.gold[product_id]
        if product_id in self.wrong:
            return wrong_pair(self.experiment, gold)
        category, subcategory = gold.split("/")
        return {"category": category, "subcategory": subcategory}

    def __call__(self, request: dict[str, Any]) -> str:
        messages = request["messages"]
        first_user = next(m["content"] for m in messages if m["role"] == "user")
        repair = any(m["role"] == "assistant" for m in messages)
        ids = re.findall(r"^\[(\S+)\] ", first_user, re.MULTILINE)
        with self.lock:
            if ids:
                self.requests.append(Request(ids, repair, messages))
                ordered = list(reversed(ids)) if self.reverse_batches else ids
                return json.dumps({"answers": [{"item_id": pid, **self.pair(pid, repair)} for pid in ordered]})
            title = re.search(r"^Product: (.*)$", first_user, re.MULTILINE)
            assert title is not None, first_user
            product_id = self.id_by_title[title.group(1)]
            self.requests.append(Request([product_id], repair, messages))
            return json.dumps(self.pair(product_id, repair))


@pytest.fixture(scope="module")
def responder(experiment: AssignCatExperiment) -> CatalogResponder:
    load = load_products_csv(PRODUCTS_CSV)
    gold = {p.product_id: f"{p.extra['gold_category']}/{p.extra['gold_subcategory']}" for p in load.products}
    id_by_title = {p.title: p.product_id for p in load.products}
    gold["single"] = "immune-support/elderberry-echinacea"
    id_by_title[SINGLE_TITLE] = "single"
    return CatalogResponder(experiment, gold, id_by_title)


@pytest.fixture(scope="module")
def catalog_server(responder: CatalogResponder) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=responder) as server:
        yield server


@dataclass
class Assay:
    """One test's isolated Assay: home, runs folder, Dagster instance; `run` is `assay run assign-cat ...`."""

    home: Path
    runs: Path
    dagster_home: Path
    server: FakeOpenAIServer
    responder: CatalogResponder

    def run(self, *args: str, expect: int = 0) -> Path:
        before = set(self.runs.glob("assign-cat-*")) if self.runs.exists() else set()
        rc = main(["run", "assign-cat", *args])
        assert rc == expect
        created = sorted(set(self.runs.glob("assign-cat-*")) - before)
        assert len(created) == 1, created
        return created[0]


@pytest.fixture
def assay(
    tmp_path: Path, catalog_server: FakeOpenAIServer, responder: CatalogResponder, monkeypatch: pytest.MonkeyPatch
) -> Assay:
    home, runs, dagster_home = tmp_path / "home", tmp_path / "runs", tmp_path / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(sqlite_instance_yaml(dagster_home))
    for name in ("ASSAY_MODEL", "ASSAY_LIMIT", "ASSAY_MAX_COST", "ASSAY_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSAY_HOME", str(home))
    monkeypatch.setenv("ASSAY_RUNS_DIR", str(runs))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("ASSAY_FAKE_BASE_URL", catalog_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    responder.reset()
    catalog_server.reset()
    return Assay(home, runs, dagster_home, catalog_server, responder)


def read_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "outputs" / "classifications.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_catalog(path: Path) -> Path:
    """Four good shipped products and three bad rows (lines 3, 5 and 7 of the file)."""
    lines = PRODUCTS_CSV.read_text(encoding="utf-8").splitlines()
    header, good = lines[0], lines[1:5]
    path.write_text(
        "\n".join(
            [
                header,  # line 1
                good[0],  # line 2
                "P0100,,no title here,immune-support,daily-immune",  # line 3: empty title
                good[1],  # line 4
                "P0101,Too,many,fields,here,immune-support,daily-immune",  # line 5: 7 fields, header has 5
                good[2],  # line 6
                good[0],  # line 7: duplicate P0001
                good[3],  # line 8
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


# ---------------------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_single_product_is_classified(assay: Assay) -> None:
    folder = assay.run("--model", "fake", "--single-product", SINGLE_TITLE)
    rows = read_rows(folder)
    assert len(rows) == 1
    row = rows[0]
    assert row["product_id"].startswith("single-") and row["title"] == SINGLE_TITLE
    assert (row["category"], row["subcategory"], row["valid"]) == ("immune-support", "elderberry-echinacea", "True")
    assert row["model_used"] == "openai/fake-model" and row["gold_category"] == ""
    request = assay.responder.requests[0]
    assert "elderberry-echinacea (Elderberry and Echinacea)" in request.messages[0]["content"]
    products = read_json(folder / "inputs" / "products.json")
    assert products == [
        {
            "product_id": row["product_id"],
            "title": SINGLE_TITLE,
            "description": "",
            "gold_category": "",
            "gold_subcategory": "",
        }
    ]
    assert "No product has a gold label" in (folder / "outputs" / "final_report.md").read_text()


@pytest.mark.slow
def test_csv_with_bad_rows_classifies_the_rest_and_logs_the_rows(assay: Assay, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.csv")
    folder = assay.run("--model", "fake", "--input", str(catalog))
    rows = read_rows(folder)
    assert [row["product_id"] for row in rows] == ["P0001", "P0002", "P0003", "P0004"]
    assert all(row["valid"] == "True" and row["category"] == row["gold_category"] for row in rows)
    log = (folder / "outputs" / "errors.log").read_text().splitlines()
    assert [line.split("\t")[:2] for line in log] == [["input", "row 3"], ["input", "row 5"], ["input", "row 7"]]
    assert "title is empty" in log[0] and "has 7 fields" in log[1] and "duplicate product_id 'P0001'" in log[2]
    assert "P0101,Too,many" in log[1]  # the raw row, to find it in the file
    summary = read_json(folder / "metadata" / "run_summary.json")
    assert summary["counts"]["items"] == 4 and summary["status"] == "complete"


@pytest.mark.slow
def test_batches_send_n_products_per_prompt_and_match_answers_back(assay: Assay) -> None:
    assay.responder.reverse_batches = True  # answers come back in the opposite order
    folder = assay.run("--model", "fake", "--limit", "12", "--batch-size", "5")
    # The three prompts are sent concurrently: their arrival order is not guaranteed, their contents are.
    assert sorted(len(r.product_ids) for r in assay.responder.requests) == [2, 5, 5]
    sent = sorted(product for r in assay.responder.requests for product in r.product_ids)
    assert sent == [f"P{n:04d}" for n in range(1, 13)]  # each product in exactly one prompt
    assert assay.server.total() == 3
    rows = read_rows(folder)
    assert [row["product_id"] for row in rows] == [f"P{n:04d}" for n in range(1, 13)]
    assert all(row["valid"] == "True" for row in rows)
    assert all(f"{r['category']}/{r['subcategory']}" == f"{r['gold_category']}/{r['gold_subcategory']}" for r in rows)
    stats = read_json(folder / "outputs" / "stats_summary.json")["models"]["fake"]
    assert stats["subcategory_accuracy"]["estimate"] == 1.0
    assert read_json(folder / "outputs" / "token_usage.json")["calls"] == 3
    templates = read_json(folder / "inputs" / "prompt_templates.json")
    assert "{items}" in templates["user_batch"]


@pytest.mark.slow
def test_a_pair_that_does_not_exist_gets_one_repair_call(assay: Assay) -> None:
    assay.responder.nonexistent = {"P0001", "P0002"}
    assay.responder.stubborn = {"P0002"}  # still wrong after the repair call
    folder = assay.run("--model", "fake", "--limit", "4")
    repairs = [r for r in assay.responder.requests if r.repair]
    assert sorted(r.product_ids[0] for r in repairs) == ["P0001", "P0002"]  # one repair call each, no more
    assert "belongs to category 'sleep-relaxation'" in repairs[0].messages[-1]["content"]
    assert assay.server.total() == 4 + 2
    rows = {row["product_id"]: row for row in read_rows(folder)}
    assert rows["P0001"]["valid"] == "True" and rows["P0001"]["repaired"] == "True"
    assert rows["P0001"]["category"] == rows["P0001"]["gold_category"]
    assert rows["P0002"]["valid"] == "False" and rows["P0002"]["category"] == ""
    assert rows["P0002"]["reason"].startswith("after repair: subcategory 'melatonin-sleep' belongs to")
    assert "melatonin-sleep" in rows["P0002"]["raw_response"]
    assert rows["P0003"]["valid"] == rows["P0004"]["valid"] == "True"
    errors = (folder / "outputs" / "errors.log").read_text()
    assert errors.startswith("invalid\tP0002\tfake\tafter repair:")
    metrics = read_json(folder / "outputs" / "stats_summary.json")["models"]["fake"]
    assert metrics["valid"] == 3 and metrics["invalid"] == 1
    assert metrics["subcategory_accuracy"]["estimate"] == 0.75


@pytest.mark.slow
def test_run_folder_layout_contents_and_no_secret(assay: Assay) -> None:
    # An alias that needs a key: the key really goes to the (fake) server, and must go nowhere else.
    keyed = fake_alias_flag("keyed", needs_key=True, max_attempts=2)
    assay.responder.wrong = {"P0002"}
    folder = assay.run("--model", "keyed", "--limit", "6", "--set", keyed)
    files = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}
    assert files >= RUN_FOLDER_FILES
    assert {f for f in files if not f.startswith("outputs/")} == {
        f for f in RUN_FOLDER_FILES if not f.startswith("outputs/")
    }
    extras = files - RUN_FOLDER_FILES
    assert extras == {
        "outputs/final_report.md",
        "outputs/final_report.html",
        "outputs/stats_summary.json",
        "outputs/results.jsonl",
        "outputs/cost_projection.json",
        "outputs/confusion_category_keyed.png",
    }

    products = read_json(folder / "inputs" / "products.json")
    assert [p["product_id"] for p in products] == [f"P{n:04d}" for n in range(1, 7)]
    assert products[0]["gold_category"] == "immune-support" and "text" not in products[0]
    assert (folder / "inputs" / "taxonomy.xml").read_bytes() == TAXONOMY_XML.read_bytes()
    assert "{taxonomy}" in read_json(folder / "inputs" / "prompt_templates.json")["system"]
    assert "keyed" in (folder / "config" / "models.yaml").read_text()
    run_config = read_json(folder / "config" / "run_config.json")
    assert run_config["experiment"]["kind"] == "assign_cat" and run_config["models"] == ["keyed"]
    assert "python" in json.dumps(read_json(folder / "config" / "system_info.json")).lower()

    with (folder / "outputs" / "classifications.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:7] == CSV_COLUMNS
    assert header[7:11] == ["gold_category", "gold_subcategory", "status", "reason"]
    rows = read_rows(folder)
    assert len(rows) == 6 and all(row["valid"] == "True" for row in rows)
    assert sum(row["category"] == row["gold_category"] for row in rows) == 5
    usage = read_json(folder / "outputs" / "token_usage.json")
    assert usage["calls"] == 6 and usage["prompt_tokens"] > 0 and usage["cost_usd"] > 0
    assert read_json(folder / "outputs" / "timing.json")["calls"] == 6
    assert (folder / "outputs" / "errors.log").read_text() == ""
    summary = read_json(folder / "metadata" / "run_summary.json")
    assert summary["status"] == "complete" and summary["counts"]["answers_valid"] == 6
    stats = read_json(folder / "outputs" / "stats_summary.json")["models"]["keyed"]
    assert stats["subcategory_accuracy"]["estimate"] == pytest.approx(5 / 6)
    assert stats["subcategory_accuracy"]["low"] < 5 / 6 < stats["subcategory_accuracy"]["high"]
    report = (folder / "outputs" / "final_report.md").read_text()
    assert "## Accuracy by level" in report and "confusion_category_keyed.png" in report
    assert "## Projected cost of a 800-product catalogue" in report and "Method." in report
    projections = read_json(folder / "outputs" / "cost_projection.json")
    measured = next(p for p in projections if p["source"] == "measured")
    assert measured["alias"] == "keyed" and measured["catalog_usd"] == pytest.approx(usage["cost_usd"] / 6 * 800)
    estimated = {p["alias"] for p in projections if p["source"] == "estimated"}
    assert {"gpt4o_mini", "haiku"} <= estimated and "keyed" not in estimated and "local" not in estimated

    # The key was sent (the fake server saw an authorized request), yet appears in no file written.
    scanned = 0
    for root in (folder, assay.home, assay.dagster_home):
        for path in root.rglob("*"):
            if path.is_file():
                scanned += 1
                assert b"SECRET" not in path.read_bytes(), f"secret written to {path}"
    assert scanned > 20


@pytest.mark.slow
def test_compare_two_runs(assay: Assay, capsys: pytest.CaptureFixture[str]) -> None:
    run_a = assay.run("--model", "fake", "--limit", "10")
    assay.responder.wrong = {"P0002", "P0005", "P0007"}
    assay.responder.nonexistent = assay.responder.stubborn = {"P0009"}
    # Another alias (version pin 2), so run B's calls are new ones instead of run A's stored answers.
    run_b = assay.run("--model", "fake_b", "--limit", "10", "--set", fake_alias_flag("fake_b", version="2"))
    capsys.readouterr()

    assert main(["compare", str(run_a), str(run_b)]) == 0
    printed = capsys.readouterr().out
    assert "fake vs fake_b" in printed and "changed answers (4)" in printed
    markdown = (run_b / "outputs" / "compare.md").read_text()
    assert "| category accuracy | 100.0% [72.2%, 100.0%] |" in markdown
    assert "| valid answers | 100.0% [72.2%, 100.0%] | 90.0% [59.6%, 98.2%] | -10.0 pp |" in markdown
    assert "| subcategory accuracy | 100.0% [72.2%, 100.0%] | 60.0%" in markdown
    # 9 products both answered validly; A right and B wrong on 3 of them: exact p = 2 * 0.5**3.
    assert "McNemar's paired test on the 9 products" in markdown
    assert "- subcategory: A right / B wrong = 3, A wrong / B right = 0, p = 0.25 (exact)" in markdown
    changed = re.findall(r"^\| (P\d{4}) \|", markdown, re.MULTILINE)
    assert changed == ["P0002", "P0005", "P0007", "P0009"]
    assert "| P0009 | " in markdown and "| (invalid) |" in markdown
    assert "| cost (USD) |" in markdown

    out = run_a / "elsewhere.md"
    assert main(["compare", str(run_a), str(run_b), "--output", str(out)]) == 0
    assert out.read_text() == markdown


# ---------------------------------------------------------------------------------------------------------
# The real offline model


@pytest.mark.slow
@pytest.mark.local_model
def test_local_model_classifies_ten_products(assay: Assay) -> None:
    from pipeline.llm.local_model import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    shared_models = REPO_ROOT / ".assay" / "models"
    if shared_models.is_dir():  # reuse the joined 1.1 GB model instead of joining it again under tmp
        assay.home.mkdir(parents=True, exist_ok=True)
        os.symlink(shared_models, assay.home / "models")
    folder = assay.run("--model", "local", "--limit", "10")
    rows = read_rows(folder)
    assert len(rows) == 10
    valid = [row for row in rows if row["valid"] == "True"]
    assert len(valid) >= 9  # constrained decoding: every valid answer is an existing pair
    category_hits = sum(row["category"] == row["gold_category"] for row in valid)
    assert category_hits >= 4, [(r["product_id"], r["category"], r["gold_category"]) for r in rows]
    assert read_json(folder / "outputs" / "token_usage.json")["cost_usd"] == 0.0
    stats = read_json(folder / "outputs" / "stats_summary.json")["models"]["local"]
    print(
        f"local model on 10 products: category {stats['category_accuracy']['estimate']:.2f}, "
        f"subcategory {stats['subcategory_accuracy']['estimate']:.2f}"
    )
