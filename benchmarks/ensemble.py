"""Benchmark of the classification ensemble on the SMS Spam Collection's test split.

Prints each figure next to its target (MISSED when it falls short). The cheap tiers' figures score the items
they leave unsettled with the stacker's best guess. Then the LLM part, through the fake OpenAI server (over
real HTTP, with the `fake` alias's made-up price): the LLM-only baseline asks the LLM voter's question about
every test item; the ensemble asks it only about the unsettled ones. The fake answers by keyword, so its
accuracy is the keyword heuristic's, not a model's; the cost figures are what the calls' tokens cost.

    python benchmarks/ensemble.py                 # rules + classical + weak supervision
    python benchmarks/ensemble.py --lora          # also the LoRA MiniLM voter (slow on CPU; needs .[local])
    python benchmarks/ensemble.py --out runs/ens  # also the reliability diagram PNG and the review queue
    python benchmarks/ensemble.py --no-llm        # skip the LLM-only baseline and the LLM tier
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import asyncio  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from pipeline.data.labelled import LabelledItem  # noqa: E402
from pipeline.ensemble.arbiter import PassResult, predict_outputs  # noqa: E402
from pipeline.ensemble.build import fit_ensemble, load_task_splits  # noqa: E402
from pipeline.ensemble.metrics import (  # noqa: E402
    brier_score,
    calibration_report,
    label_indices,
    latency_summary,
    macro_f1,
    plot_reliability_diagram,
    risk_coverage_curve,
    slice_label_support,
    slice_report,
    worst_supported_slice,
)
from pipeline.ensemble.review import mine_review_queue, write_review_queue  # noqa: E402
from pipeline.ensemble.task_config import TaskConfig, load_task_config  # noqa: E402

MIN_LABEL_SUPPORT = 10
"""Gold items of every label a slice needs to count toward the supported worst-slice figure."""
SPAM_WORDS = ("free", "win", "prize", "claim", "cash", "txt", "call", "urgent", "award", "mobile", "reply", "stop")
RELEVANT_WORDS = ("h5n1", "h5n8", "avian", "bird flu", "poultry", "flock", "cull")


def keyword_responder(request: dict[str, Any]) -> str:
    """The fake LLM: answers the LLM voter's JSON by keyword (spam words, or bird-flu words), confidence 0.9."""
    text = str(request["messages"][-1]["content"]).lower()
    system = str(request["messages"][0]["content"])
    if "relevant" in system:
        label = "relevant" if any(word in text for word in RELEVANT_WORDS) else "irrelevant"
    else:
        label = "spam" if any(word in text for word in SPAM_WORDS) else "ham"
    return json.dumps({"label": label, "confidence": 0.9, "reason": "keywords"})


@dataclass(frozen=True)
class LlmAnswers:
    """The LLM voter's answers on some items through the fake server, and what the calls cost."""

    labels: dict[str, str | None]
    cost_usd: float
    calls: int


def ask_llm(
    config: TaskConfig, train: Sequence[LabelledItem], items: Sequence[LabelledItem], store: Path
) -> LlmAnswers:
    """The LLM voter's call about each of ``items`` (as the experiment plans it), on `fake`, through LLMClient."""
    from pipeline.config import load_experiment, load_model_zoo
    from pipeline.ensemble.llm_voter import interpret_llm_answer
    from pipeline.experiments.ensemble import EnsembleExperiment
    from pipeline.llm.client import LLMClient
    from pipeline.store import ResponseStore

    kind = EnsembleExperiment(load_experiment("sms-ensemble", ["models=[fake]", f"ensemble.task={config.folder}"]))
    zoo = load_model_zoo()
    few_shot = kind.few_shot(train)
    specs = [kind.llm_spec(item.item_id, item.text, few_shot, "fake", zoo) for item in items]
    client = LLMClient(zoo, ResponseStore(store))

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(client.complete(spec) for spec in specs))

    try:
        results = asyncio.run(run_all())
    finally:
        client.close()
    labels: dict[str, str | None] = {}
    for item, result in zip(items, results, strict=True):
        out = interpret_llm_answer(result.text, config.label_names, config.voters.llm.min_confidence)
        labels[item.item_id] = out.predicted()[0]
    # A call answered from the store was paid for once: count each distinct call's recorded cost once.
    costs = {result.call_id: result.record.cost_usd for result in results}
    return LlmAnswers(labels, sum(costs.values()), len(costs))


def _row(name: str, value: float, target: str, ok: bool, fmt: str = "{:.4f}") -> None:
    print(f"{name:<44} {fmt.format(value):>10}   target {target:<10} {'ok' if ok else 'MISSED'}")


def main() -> None:
    """Fit on train + calibration, score the test split, print figures against targets."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sms")
    parser.add_argument("--lora", action="store_true", help="include the LoRA voter (slow on CPU)")
    parser.add_argument("--latency-items", type=int, default=300, help="test items timed one at a time")
    parser.add_argument("--out", type=Path, default=None, help="folder for the reliability PNG and review queue")
    parser.add_argument("--no-llm", action="store_true", help="skip the LLM-only baseline and the LLM tier")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    config = load_task_config(args.task)
    splits = load_task_splits(config)
    t0 = time.perf_counter()
    ensemble = fit_ensemble(config, splits, include_lora=args.lora or None)
    fit_s = time.perf_counter() - t0
    labels = config.label_names
    test = splits.test
    texts = [item.text for item in test]
    gold = [item.label or "" for item in test]
    outputs = predict_outputs(ensemble.voters, texts)
    item_slices = [config.slices_of(t) for t in texts]
    first = ensemble.arbiter.first_pass([i.item_id for i in test], outputs, item_slices)
    stacked = ensemble.arbiter.stacker.predict_proba(outputs)
    truth = label_indices(labels, gold)

    print(
        f"task {config.name}: train {len(splits.train)}, calibration {len(splits.calibration)}, test {len(test)}; "
        f"voters {[v.name for v in ensemble.voters]}; fitted in {fit_s:.1f} s"
    )
    if ensemble.classical_selection:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in ensemble.classical_selection.ece.items())
        print(f"classical variant: {ensemble.classical_selection.voter.variant} (calibration ECE: {scores})")
    thresholds = ensemble.arbiter.thresholds
    if thresholds:
        own = {k: round(v, 4) for k, v in thresholds.slice_thresholds.items()}
        print(
            f"conformal: alpha {thresholds.alpha}, {thresholds.n_calibration} calibration items reach the tier, "
            f"global q {thresholds.global_threshold:.4f}, per slice {own}"
        )
    tiers: dict[str, int] = {}
    for d in first.decisions:
        tiers[d.tier] = tiers.get(d.tier, 0) + 1
    print(f"first-pass tiers: {tiers}")

    predictions = [d.label if d.settled else d.best_guess for d in first.decisions]
    settled = [i for i, d in enumerate(first.decisions) if d.settled]
    settled_errors = sum(predictions[i] != gold[i] for i in settled)
    f1 = macro_f1(gold, predictions, labels)
    slices = slice_report(gold, predictions, item_slices, [s.name for s in config.slices], labels)
    calibration = calibration_report(stacked.max(axis=1), stacked.argmax(axis=1) == truth)
    curve = risk_coverage_curve(stacked.max(axis=1), stacked.argmax(axis=1) == truth)
    llm_rate = 1 - first.settled_share()

    # Latency per prediction for items the LLM does not see: every cheap voter + the arbiter on one text.
    seconds = []
    for i in settled[: args.latency_items]:
        start = time.perf_counter()
        one = predict_outputs(ensemble.voters, [texts[i]])
        ensemble.arbiter.first_pass([test[i].item_id], one, [item_slices[i]])
        seconds.append(time.perf_counter() - start)
    latency = latency_summary(seconds)

    print()
    _row("macro F1 (settled + stacker guess on rest)", f1, ">= 0.92", f1 >= 0.92)
    worst = slices.worst
    _row(
        f"worst-slice macro F1 ({worst.name if worst else '-'})",
        worst.macro_f1 if worst else float("nan"),
        ">= 0.85",
        bool(worst and worst.macro_f1 >= 0.85),
    )
    support = slice_label_support(gold, item_slices, [s.name for s in config.slices], labels)
    supported = worst_supported_slice(slices, support, MIN_LABEL_SUPPORT)
    _row(
        f"worst-slice F1, >= {MIN_LABEL_SUPPORT} of each label ({supported.name if supported else '-'})",
        supported.macro_f1 if supported else float("nan"),
        ">= 0.85",
        bool(supported and supported.macro_f1 >= 0.85),
    )
    _row("ECE (stacker, 15 bins)", calibration.ece, "<= 0.03", calibration.ece <= 0.03)
    cov = curve.coverage_at_risk(0.01)
    _row("coverage at <= 1% selective error", cov, ">= 0.85", cov >= 0.85)
    _row("LLM call rate (share not settled cheaply)", llm_rate, "<= 0.10", llm_rate <= 0.10)
    _row("p95 latency per cheap prediction (ms)", latency.p95_ms, "<= 200", latency.p95_ms <= 200, "{:.1f}")
    if not args.no_llm:
        llm_figures(config, splits.train, test, first, gold)
    print()
    print(
        f"settled items: {len(settled)}/{len(test)}, errors among them {settled_errors} "
        f"({settled_errors / max(1, len(settled)):.4f}); Brier {brier_score(stacked, truth):.4f}; "
        f"AURC {curve.area():.4f}; latency p50 {latency.p50_ms:.1f} ms over {latency.n} items"
    )
    print(
        "slices: "
        + ", ".join(
            f"{s.name} {s.macro_f1:.3f} (n={s.n}, " + "/".join(f"{k} {v}" for k, v in support[s.name].items()) + ")"
            for s in slices.slices
        )
    )
    if ensemble.labeling_functions:
        lf = ensemble.labeling_functions
        print(f"labeling functions: {len(lf.functions)}, total coverage {lf.total_coverage:.3f} on calibration split")
    if args.out:
        png = plot_reliability_diagram(calibration, args.out / "reliability.png", f"{config.name} stacker")
        queue = mine_review_queue(
            [i.item_id for i in test], texts, outputs, first, {label.name: label.harm_weight for label in config.labels}
        )
        files = write_review_queue(queue, args.out)
        print(f"wrote {png}, {files.csv} ({files.rows} rows)")


def llm_figures(
    config: TaskConfig, train: Sequence[LabelledItem], test: Sequence[LabelledItem], first: PassResult, gold: list[str]
) -> None:
    """LLM-only baseline vs the ensemble's LLM tier, both through the fake server at the `fake` alias's price."""
    from tests.fakes.openai_server import FakeOpenAIServer

    labels = config.label_names
    unsettled_ids = {d.item_id for d in first.decisions if not d.settled}
    with FakeOpenAIServer(responder=keyword_responder) as server, tempfile.TemporaryDirectory() as tmp:
        os.environ["ASSAY_FAKE_BASE_URL"] = server.base_url
        baseline = ask_llm(config, train, test, Path(tmp) / "baseline")
        tier = ask_llm(config, train, [i for i in test if i.item_id in unsettled_ids], Path(tmp) / "ensemble")
    n = len(test)
    base_predictions = [baseline.labels[item.item_id] for item in test]
    base_accuracy = sum(p == g for p, g in zip(base_predictions, gold, strict=True)) / n
    final = [
        d.label if d.settled else tier.labels.get(d.item_id) or d.best_guess for d in first.decisions
    ]  # an LLM abstention keeps the stacker's guess for scoring, as the cheap figures do
    base_cost, ensemble_cost = baseline.cost_usd / n, tier.cost_usd / n
    print(f"{'LLM-only baseline accuracy (fake, keywords)':<44} {base_accuracy:>10.4f}   (reference)")
    print(f"{'LLM-only baseline macro F1 (fake, keywords)':<44} {macro_f1(gold, base_predictions, labels):>10.4f}")
    print(f"{'ensemble macro F1 with the fake LLM tier':<44} {macro_f1(gold, final, labels):>10.4f}")
    _row("LLM-only cost per prediction (USD, fake)", base_cost, "(baseline)", True, "{:.8f}")
    ratio = base_cost / ensemble_cost if ensemble_cost else float("inf")
    _row("ensemble cost per prediction (USD, fake)", ensemble_cost, f"<= {base_cost / 10:.8f}", ratio >= 10, "{:.8f}")
    print(f"{'cost ratio baseline / ensemble':<44} {ratio:>10.1f}x  target >= 10x")
    print(f"LLM calls: baseline {baseline.calls}, ensemble {tier.calls} (identical messages share one call)")


if __name__ == "__main__":
    main()
