"""The stages of the `ensemble` kind as functions of upstream records (see pipeline/experiments/ensemble.py).

Trained voters and the fitted arbiter are versioned joblib artifacts under `<work>/voters/` and `<work>/arbiter/`,
named by a hash of their settings and the exact data they were fitted on: a re-run with the same inputs loads
them instead of refitting, and a record always names the file it used. A missing LLM answer is an abstention
with its reason, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import REPO_ROOT
from pipeline.data.labelled import LabelledItem, Splits, items_hash, stratified_splits
from pipeline.data.loaders import Item, ItemSet
from pipeline.data.snapshot import read_snapshot, write_snapshot
from pipeline.experiments.ensemble_records import (
    ArbiterRecord,
    EnsembleMetrics,
    FinalPassRecord,
    LlmVote,
    ReviewQueueRecord,
    SliceFigure,
    SplitsRecord,
    VoterRecord,
    tier_counts,
)
from pipeline.llm.errors import ConfigError
from pipeline.plan import CallPlan, PlannedCall
from pipeline.records import ReportRecord
from pipeline.stages import CallStage, DataStage, Stage, StageInputs

if TYPE_CHECKING:
    from pipeline.ensemble.arbiter import Arbiter
    from pipeline.ensemble.voter import TrainedVoter, Voter
    from pipeline.experiments.ensemble import EnsembleExperiment

SOURCE, RULES, CLASSICAL, WEAK, LORA = (
    "source_splits",
    "rules_voter",
    "classical_voter",
    "weak_supervision_voter",
    "lora_voter",
)
FIRST, LLM, FINAL, METRICS, REVIEW, REPORT = (
    "arbiter_first_pass",
    "llm_voter",
    "arbiter",
    "metrics",
    "review_queue",
    "report",
)
MIN_LABEL_SUPPORT = 10
"""A slice counts toward the supported worst-slice F1 only with this many gold items of every label: an F1 over
three spam messages moves by 0.2 with one mistake."""
SLICE_MIN_ITEMS = 20
"""A slice counts toward either worst-slice figure only with this many items (pipeline.ensemble.metrics)."""


@dataclass(frozen=True)
class ArbiterArtifact:
    """The fitted arbiter as saved on disk, and what it was fitted on."""

    arbiter: Any
    """pipeline.ensemble.arbiter.Arbiter"""
    voters: tuple[str, ...]
    key: str
    """Hash of the voters' artifacts, the splits and the arbiter settings: names the file."""
    format_version: int = 1


def _hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EnsembleStages:
    """Stage functions bound to one ensemble experiment (its task config and prompts)."""

    kind: EnsembleExperiment

    # -- declaration ----------------------------------------------------------------------------------------
    def voter_stages(self) -> list[str]:
        """Enabled voter stages, in stacking-feature order."""
        voters = self.kind.task.voters
        enabled = [(RULES, voters.rules.enabled), (CLASSICAL, voters.classical.enabled)]
        enabled += [(WEAK, voters.weak_supervision.enabled), (LORA, voters.lora.enabled)]
        return [name for name, on in enabled if on]

    def declare(self) -> list[Stage]:
        """The stage graph of this experiment."""
        voters = self.voter_stages()
        if not voters:
            raise ConfigError(
                f"task {self.kind.task.name!r} enables no cheap voter; enable voters.rules, classical or "
                "weak_supervision in its task.yaml"
            )
        descriptions = {
            RULES: "Rules voter: the task's regex rules (safety rules force or escalate), as a versioned artifact.",
            CLASSICAL: "Classical voter: TF-IDF + linear model, the calibration variant with the lowest ECE.",
            WEAK: "Weak-supervision voter: Snorkel's LabelModel over the rules and keyword labeling functions.",
            LORA: "LoRA voter: MiniLM with a LoRA adapter fine-tuned on the training split (CPU).",
        }
        stages: list[Stage] = [
            DataStage(
                SOURCE,
                (),
                self.source,
                SplitsRecord,
                "The task's labelled items (reviewed labels joined), seeded train/calibration/test splits, frozen.",
                role="source",
            )
        ]
        for name in voters:
            deps = (SOURCE, RULES) if name == WEAK and RULES in voters else (SOURCE,)
            stages.append(DataStage(name, deps, self._voter_stage(name), VoterRecord, descriptions[name]))
        stages += [
            DataStage(
                FIRST,
                (SOURCE, *voters),
                self.first_pass,
                ArbiterRecord,
                "Arbiter fitted (out-of-fold stacker, split-conformal thresholds); its first pass over the test split.",
            ),
            CallStage(
                LLM,
                (SOURCE, FIRST),
                self.plan_llm,
                "One LLM voter call per test item the cheap tiers left unsettled (none for the settled ones).",
            ),
            DataStage(
                FINAL,
                (FIRST, LLM),
                self.final_pass,
                FinalPassRecord,
                "Final pass: the LLM voter's answers merged; an unsure or missing answer abstains (to review).",
            ),
            DataStage(
                METRICS,
                (SOURCE, FIRST, FINAL, *voters),
                self.metrics,
                EnsembleMetrics,
                "Macro and worst-slice F1, ECE, Brier, risk-coverage, LLM call rate, cost and latency per prediction.",
                role="analysis",
            ),
            DataStage(
                REVIEW,
                (SOURCE, FIRST, FINAL),
                self.review_queue,
                ReviewQueueRecord,
                "Review queue (CSV/JSONL): abstentions and the items the voters disagree on most.",
                role="analysis",
            ),
            DataStage(
                REPORT,
                (SOURCE, FINAL, METRICS, REVIEW, LLM),
                self.report,
                ReportRecord,
                "Markdown/HTML report with the ensemble's figures, results files and the lab-notebook run folder.",
                role="report",
            ),
        ]
        return stages

    # -- source ---------------------------------------------------------------------------------------------
    def source(self, inputs: StageInputs) -> SplitsRecord:
        """Load the task's items, subsample, join reviewed labels, split with the task's seed, freeze."""
        from pipeline.ensemble.build import load_task_items
        from pipeline.ensemble.lora_voter import stratified_subsample
        from pipeline.ensemble.review import merge_feedback, read_feedback

        task = self.kind.task
        loaded = load_task_items(task)
        items = [item for item in loaded if item.text.strip()]
        items = stratified_subsample(items, self.kind.max_items, task.data.seed)
        files = [_repo_path(path) for path in self.kind.section.feedback]
        for path in files:
            if not path.is_file():
                raise ConfigError(
                    f"ensemble.feedback: {path} not found; give a filled-in review queue (CSV or JSONL) or drop it"
                )
        feedback = [label for path in files for label in read_feedback(path, task.label_names)]
        items = merge_feedback(items, feedback)
        splits = stratified_splits(items, task.data.train_fraction, task.data.calibration_fraction, task.data.seed)
        rows = [
            Item(item.item_id, {"text": item.text, "split": name, "provenance": item.source}, item.label)
            for name, part in _parts(splits)
            for item in part
        ]
        snap = write_snapshot(ItemSet(rows, [], f"task {task.name}"), inputs.context.snapshot_dir)
        return SplitsRecord(
            task=task.name,
            snapshot=str(snap.path),
            sha256=snap.sha256,
            seed=task.data.seed,
            counts={name: len(part) for name, part in _parts(splits)},
            hashes={name: items_hash(part) for name, part in _parts(splits)},
            max_items=self.kind.max_items,
            dropped_empty=len(loaded) - sum(1 for item in loaded if item.text.strip()),
            feedback_files=[str(path) for path in files],
            reviewed_labels=len({label.item_id for label in feedback}),
        )

    def splits(self, inputs: StageInputs) -> Splits:
        """The frozen splits, checked against the hashes the source stage recorded."""
        record = inputs.record(SOURCE, SplitsRecord)
        parts: dict[str, list[LabelledItem]] = {"train": [], "calibration": [], "test": []}
        for item in read_snapshot(inputs.context.snapshot_dir):
            fields = item.fields
            parts[str(fields["split"])].append(
                LabelledItem(item.item_id, str(fields["text"]), item.gold, str(fields.get("provenance", "")))
            )
        for name, part in parts.items():
            if items_hash(part) != record.hashes[name]:
                raise ValueError(
                    f"{record.snapshot}: the {name} split differs from the one recorded by {SOURCE}; "
                    f"re-materialize {SOURCE} (assay run {self.kind.config.name})"
                )
        return Splits(tuple(parts["train"]), tuple(parts["calibration"]), tuple(parts["test"]), record.seed)

    # -- voters ---------------------------------------------------------------------------------------------
    def _voter_stage(self, name: str) -> Any:
        def compute(inputs: StageInputs) -> VoterRecord:
            return self.fit_voter(name, inputs)

        compute.__doc__ = f"Fit (or load) the {name} artifact."
        return compute

    def _voter_settings(self, name: str, splits: Splits) -> dict[str, Any]:
        """What besides the training data decides the fitted voter (hashed into the artifact's name)."""
        from pipeline.ensemble.voter import ARTIFACT_FORMAT_VERSION

        task = self.kind.task
        voters = task.voters
        settings: dict[str, Any] = {"voter": name, "labels": task.label_names, "artifact": ARTIFACT_FORMAT_VERSION}
        if name in (RULES, WEAK) and voters.rules.enabled:
            settings["rules"] = task.resolve(voters.rules.file).read_text(encoding="utf-8")
        if name == CLASSICAL:
            # The variant is chosen on the calibration split, so it is part of what the artifact depends on.
            settings.update(config=voters.classical.model_dump(mode="json"), calibration=_split_hash(splits, "cal"))
        elif name == WEAK:
            settings["config"] = voters.weak_supervision.model_dump(mode="json")
        elif name == LORA:
            settings["config"] = voters.lora.model_dump(mode="json")
        return settings

    def fit_voter(self, name: str, inputs: StageInputs) -> VoterRecord:
        """Train voter `name` on the training split, or load its artifact when the same one exists."""
        from pipeline.ensemble.voter import load_voter, save_voter

        splits = self.splits(inputs)
        train_hash = "" if name == RULES else items_hash(splits.train)
        settings_hash = _hash(self._voter_settings(name, splits))
        folder = inputs.context.work_dir / "voters"
        artifact = folder / f"{name}-{settings_hash[:12]}-{(train_hash or 'untrained')[:12]}.joblib"
        details_path = artifact.with_suffix(".details.json")
        reused = artifact.is_file() and details_path.is_file()
        if reused:
            trained = load_voter(artifact, expected_training_hash=train_hash)
            details = json.loads(details_path.read_text(encoding="utf-8"))
        else:
            trained, details = self._train(name, splits, inputs)
            save_voter(trained, artifact)
            details_path.write_text(json.dumps(details, default=str), encoding="utf-8")
        return VoterRecord(
            name, type(trained).__name__, str(artifact), trained.training_hash, settings_hash, reused, details
        )

    def _train(self, name: str, splits: Splits, inputs: StageInputs) -> tuple[TrainedVoter, dict[str, Any]]:
        from pipeline.ensemble.classical import select_classical_variant
        from pipeline.ensemble.rules import RulesVoter, load_rules
        from pipeline.ensemble.weak_supervision import WeakSupervisionVoter, build_labeling_functions

        task = self.kind.task
        labels, voters = task.label_names, task.voters
        if name == RULES:
            rule_set = load_rules(task.resolve(voters.rules.file), labels)
            return RulesVoter(rule_set), {"rules": len(rule_set.rules), "file": rule_set.source}
        if name == CLASSICAL:
            selection = select_classical_variant(labels, splits.train, splits.calibration, voters.classical)
            return selection.voter, {"variant": str(selection.voter.variant), "calibration_ece": selection.ece}
        if name == WEAK:
            rules = self._load(inputs, RULES).rule_set if voters.rules.enabled else None
            lfs = build_labeling_functions(rules, voters.weak_supervision.keywords)
            trained = WeakSupervisionVoter(labels, lfs, voters.weak_supervision).fit(splits.train)
            return trained, {"labeling_functions": len(lfs)}
        from pipeline.ensemble.lora_voter import LoraVoter

        return LoraVoter(labels, voters.lora).fit(splits.train), {"base_model": voters.lora.base_model}

    def _load(self, inputs: StageInputs, name: str) -> Any:
        from pipeline.ensemble.voter import load_voter

        record = inputs.record(name, VoterRecord)
        return load_voter(record.artifact, expected_training_hash=record.training_hash)

    def _untrained(self, name: str, trained: Any) -> Voter:
        """The voter as it was before fitting, refitted per fold for the out-of-fold stacking features."""
        from pipeline.ensemble.classical import ClassicalVoter
        from pipeline.ensemble.lora_voter import LoraVoter
        from pipeline.ensemble.weak_supervision import WeakSupervisionVoter

        task = self.kind.task
        voters = task.voters
        if name == RULES:
            untrained: Voter = trained
        elif name == CLASSICAL:
            untrained = ClassicalVoter(task.label_names, trained.variant, voters.classical)
        elif name == WEAK:
            untrained = WeakSupervisionVoter(task.label_names, trained.lfs, voters.weak_supervision)
        else:
            untrained = LoraVoter(task.label_names, voters.lora)
        return untrained

    # -- arbiter --------------------------------------------------------------------------------------------
    def trained_voters(self, inputs: StageInputs) -> list[TrainedVoter]:
        """Every enabled voter's artifact, in stacking-feature order."""
        return [self._load(inputs, name) for name in self.voter_stages()]

    def first_pass(self, inputs: StageInputs) -> ArbiterRecord:
        """Fit (or load) the arbiter on train + calibration; decide every test item with the cheap voters."""
        import joblib

        from pipeline.ensemble.arbiter import predict_outputs
        from pipeline.ensemble.build import fit_arbiter

        task = self.kind.task
        splits = self.splits(inputs)
        names = self.voter_stages()
        trained = self.trained_voters(inputs)
        voter_keys = [inputs.record(name, VoterRecord).artifact for name in names]
        key = _hash(
            voter_keys,
            items_hash(splits.train),
            items_hash(splits.calibration),
            task.arbiter.model_dump(mode="json"),
            task.conformal.model_dump(mode="json"),
            [s.model_dump(mode="json") for s in task.slices],
        )
        path = inputs.context.work_dir / "arbiter" / f"arbiter-{key[:12]}.joblib"
        if path.is_file():
            saved = joblib.load(path)
            if not isinstance(saved, ArbiterArtifact) or saved.format_version != 1 or saved.key != key:
                raise ValueError(f"{path} is not an arbiter artifact of this Assay; delete it and re-run {FIRST}")
            arbiter: Arbiter = saved.arbiter
        else:
            untrained = [self._untrained(name, voter) for name, voter in zip(names, trained, strict=True)]
            arbiter = fit_arbiter(task, untrained, trained, splits.train, splits.calibration)
            path.parent.mkdir(parents=True, exist_ok=True)
            joblib.dump(ArbiterArtifact(arbiter, tuple(names), key), path)
        texts = [item.text for item in splits.test]
        outputs = predict_outputs(trained, texts)
        result = arbiter.first_pass([item.item_id for item in splits.test], outputs, [task.slices_of(t) for t in texts])
        stacked = arbiter.stacker.predict_proba(outputs)
        thresholds = arbiter.thresholds
        conformal = asdict(thresholds) if thresholds is not None else {}
        return ArbiterRecord(
            str(path),
            tuple(names),
            result,
            tuple(outputs),
            tuple(tuple(float(p) for p in row) for row in stacked),
            conformal,
        )

    # -- the LLM voter's calls ------------------------------------------------------------------------------
    def plan_llm(self, inputs: StageInputs) -> CallPlan:
        """One call per test item the first pass left unsettled; no call for a settled item."""
        context = inputs.context
        first = inputs.record(FIRST, ArbiterRecord)
        calls: list[PlannedCall] = []
        if self.kind.task.voters.llm.enabled:
            splits = self.splits(inputs)
            texts = {item.item_id: item.text for item in splits.test}
            few_shot = self.kind.few_shot(splits.train)
            alias = context.aliases()[0]
            for item_id in first.unsettled():
                spec = self.kind.llm_spec(item_id, texts[item_id], few_shot, alias, context.zoo)
                calls.append(PlannedCall(spec, (item_id,)))
        return CallPlan.build(context.config.name, LLM, calls, inputs.input_digests([FIRST]))

    def final_pass(self, inputs: StageInputs) -> FinalPassRecord:
        """Merge the stored LLM answers into the first pass (a plan made from another first pass is ignored)."""
        import joblib

        from pipeline.ensemble.llm_voter import interpret_llm_answer
        from pipeline.ensemble.voter import VoterOutput

        task = self.kind.task
        first = inputs.record(FIRST, ArbiterRecord)
        responses = inputs.responses(LLM, required=False)
        votes: list[LlmVote] = []
        outputs: dict[str, VoterOutput] = {}
        for call in responses.plan.calls if responses.current else ():
            stored = responses.answer(call.call_id)
            for position, item_id in enumerate(call.item_ids):
                if stored is None:
                    reason = "the LLM call has no stored response (failed or not run): assay resume"
                    votes.append(LlmVote(item_id, call.call_id, False, None, reason, "", call.spec.alias, "", 0.0, 0.0))
                    continue
                out = interpret_llm_answer(stored.text, task.label_names, task.voters.llm.min_confidence, "llm")
                outputs[item_id] = out
                # Items with identical messages share one call: its cost is counted once, on the first item.
                cost = stored.cost_usd if position == 0 else 0.0
                votes.append(
                    LlmVote(
                        item_id,
                        call.call_id,
                        True,
                        out.predicted()[0],
                        out.explanations[0],
                        stored.text,
                        stored.alias_used,
                        stored.model_used,
                        cost,
                        stored.latency_s,
                    )
                )
        saved: ArbiterArtifact = joblib.load(first.artifact)
        final = saved.arbiter.final_pass(first.first_pass, outputs)
        return FinalPassRecord(final, tuple(votes), responses.plan.plan_id, responses.current)

    # -- analysis -------------------------------------------------------------------------------------------
    def metrics(self, inputs: StageInputs) -> EnsembleMetrics:
        """Every figure on the test split (see EnsembleMetrics)."""
        import numpy as np

        from pipeline.ensemble.metrics import (
            brier_score,
            calibration_report,
            label_indices,
            latency_summary,
            macro_f1,
            risk_coverage_curve,
            slice_label_support,
            slice_report,
            worst_supported_slice,
        )

        task = self.kind.task
        labels = task.label_names
        splits = self.splits(inputs)
        first = inputs.record(FIRST, ArbiterRecord)
        final = inputs.record(FINAL, FinalPassRecord)
        test = splits.test
        n = len(test)
        gold = [item.label or "" for item in test]
        decisions = final.final_pass.decisions
        predictions = [d.label if d.settled else d.best_guess for d in decisions]
        settled = [i for i, d in enumerate(decisions) if d.settled]
        errors = sum(predictions[i] != gold[i] for i in settled)
        item_slices = [task.slices_of(item.text) for item in test]
        slice_names = [s.name for s in task.slices]
        report = slice_report(gold, predictions, item_slices, slice_names, labels, SLICE_MIN_ITEMS)
        support = slice_label_support(gold, item_slices, slice_names, labels)
        figures = [SliceFigure(e.name, e.n, float(e.macro_f1), support[e.name]) for e in report.slices]
        worst_supported = worst_supported_slice(report, support, MIN_LABEL_SUPPORT, SLICE_MIN_ITEMS)
        stacked = np.asarray(first.stacker_proba, dtype=float).reshape(n, len(labels))
        truth = label_indices(labels, gold)
        hits = stacked.argmax(axis=1) == truth
        calibration = calibration_report(stacked.max(axis=1), hits)
        curve = risk_coverage_curve(stacked.max(axis=1), hits)
        step = max(1, len(curve.coverage) // 200)
        points = tuple((float(c), float(r)) for c, r in zip(curve.coverage[::step], curve.risk[::step], strict=True))
        cheap = self._cheap_latencies(inputs, splits, first)
        cheap_summary = latency_summary(cheap)
        llm_seconds = [float(np.median(cheap)) + v.latency_s for v in final.votes if v.answered]
        llm_summary = latency_summary(llm_seconds) if llm_seconds else None
        cost = sum(v.cost_usd for v in final.votes)
        unsettled_first = len(first.unsettled())
        return EnsembleMetrics(
            test_items=n,
            macro_f1=macro_f1(gold, predictions, labels),
            macro_f1_settled=macro_f1([gold[i] for i in settled], [predictions[i] for i in settled], labels)
            if settled
            else float("nan"),
            accuracy=sum(p == g for p, g in zip(predictions, gold, strict=True)) / n,
            coverage=len(settled) / n,
            selective_error=errors / len(settled) if settled else float("nan"),
            slices=tuple(figures),
            worst_slice=report.worst.name if report.worst else None,
            worst_slice_f1=float(report.worst.macro_f1) if report.worst else None,
            min_label_support=MIN_LABEL_SUPPORT,
            worst_supported_slice=worst_supported.name if worst_supported else None,
            worst_supported_slice_f1=float(worst_supported.macro_f1) if worst_supported else None,
            ece=calibration.ece,
            calibration_bins=tuple(
                (b.lower, b.upper, b.count, b.mean_confidence, b.accuracy) for b in calibration.bins
            ),
            brier=brier_score(stacked, truth),
            coverage_at_1pct_risk=curve.coverage_at_risk(0.01),
            aurc=curve.area(),
            risk_coverage=points,
            tiers_first=tier_counts(first.first_pass.decisions),
            tiers_final=tier_counts(decisions),
            llm_calls=len({v.call_id for v in final.votes}),
            llm_call_rate=unsettled_first / n,
            llm_answered=sum(v.answered for v in final.votes),
            llm_cost_usd=cost,
            cost_per_prediction_usd=cost / n,
            cheap_latency_p50_ms=cheap_summary.p50_ms,
            cheap_latency_p95_ms=cheap_summary.p95_ms,
            llm_latency_p50_ms=llm_summary.p50_ms if llm_summary else None,
            llm_latency_p95_ms=llm_summary.p95_ms if llm_summary else None,
            labeling_functions=self._labeling_functions(inputs, splits),
            classical_variants=dict(inputs.record(CLASSICAL, VoterRecord).details.get("calibration_ece", {}))
            if CLASSICAL in self.voter_stages()
            else {},
        )

    def _cheap_latencies(self, inputs: StageInputs, splits: Splits, first: ArbiterRecord) -> list[float]:
        """Seconds for one text through every cheap voter and the arbiter, for settled test items, one at a time."""
        import joblib

        from pipeline.ensemble.arbiter import predict_outputs

        task = self.kind.task
        voters = self.trained_voters(inputs)
        arbiter = joblib.load(first.artifact).arbiter
        settled = {d.item_id for d in first.first_pass.decisions if d.settled}
        chosen = [item for item in splits.test if item.item_id in settled][: self.kind.section.latency_items]
        chosen = chosen or list(splits.test[: self.kind.section.latency_items])
        seconds = []
        for item in chosen:
            start = time.perf_counter()
            outputs = predict_outputs(voters, [item.text])
            arbiter.first_pass([item.item_id], outputs, [task.slices_of(item.text)])
            seconds.append(time.perf_counter() - start)
        return seconds

    def _labeling_functions(self, inputs: StageInputs, splits: Splits) -> tuple[dict[str, Any], ...]:
        """Snorkel's LF analysis of the weak-supervision voter's functions on the calibration split."""
        if WEAK not in self.voter_stages():
            return ()
        from pipeline.ensemble.weak_supervision import analyse_labeling_functions

        voter = self._load(inputs, WEAK)
        analysis = analyse_labeling_functions(voter.lfs, self.kind.task.label_names, splits.calibration)
        return tuple(asdict(stats) for stats in analysis.functions)

    def review_queue(self, inputs: StageInputs) -> ReviewQueueRecord:
        """Abstentions and the most disputed settled items, as CSV and JSONL under `<work>/review/`."""
        from pipeline.ensemble.review import mine_review_queue, write_review_queue

        task = self.kind.task
        test = self.splits(inputs).test
        first = inputs.record(FIRST, ArbiterRecord)
        final = inputs.record(FINAL, FinalPassRecord)
        queue = mine_review_queue(
            [item.item_id for item in test],
            [item.text for item in test],
            first.outputs,
            final.final_pass,
            {label.name: label.harm_weight for label in task.labels},
            self.kind.section.review_top_disagreements,
        )
        files = write_review_queue(queue, inputs.context.work_dir / "review")
        abstained = sum(row.why.startswith("abstained") for row in queue)
        return ReviewQueueRecord(str(files.csv), str(files.jsonl), files.rows, abstained, files.rows - abstained)

    # -- report ---------------------------------------------------------------------------------------------
    def report(self, inputs: StageInputs) -> ReportRecord:
        """The standard run folder (pipeline/report/runs.py) plus the ensemble's figures and review queue."""
        from pipeline.experiments.ensemble_report import EnsembleReport

        return EnsembleReport(self.kind).write(inputs, self.splits(inputs).test)


def _parts(splits: Splits) -> list[tuple[str, Sequence[LabelledItem]]]:
    return [("train", splits.train), ("calibration", splits.calibration), ("test", splits.test)]


def _split_hash(splits: Splits, which: str) -> str:
    return items_hash(splits.calibration if which == "cal" else splits.train)


def _repo_path(path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate
