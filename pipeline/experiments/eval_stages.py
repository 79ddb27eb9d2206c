"""The evaluation loop's stages of the classify family, each present when the experiment file asks for it:

    answers -> hard_checks                                   (`checks:`; an asset check on the pass rate)
    answers -> judge (calls) -> judgements                   (`judge:`; votes, flaky items, agreement)
    answers -> canary_drift                                  (`canary:`; an asset check that fires on drift)
    source  -> perspectives (calls) -> synthesis (calls) -> syntheses      (`perspectives:`)

The domain logic lives in pipeline/evaluation/; these functions read upstream records through StageInputs and
return typed records, as the classify stages do.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.calls import CallSpec
from pipeline.config import REPO_ROOT
from pipeline.data.loaders import Item
from pipeline.evaluation.answers import answers_match
from pipeline.evaluation.checks import pass_rate_ok, run_checks
from pipeline.evaluation.drift import DriftAlarm, compare_runs, drift_alarm
from pipeline.evaluation.judges import (
    Judgement as Reading,
)
from pipeline.evaluation.judges import (
    find_flaky,
    judge_messages,
    judge_score_schema,
    parse_judgement,
    votes_by_item,
)
from pipeline.evaluation.model_runs import answers_by_item
from pipeline.evaluation.perspectives import Role, role_messages, synthesis_messages
from pipeline.experiments.eval_records import CanaryDrift, HardCheckRow, HardCheckSet, PerspectiveRow, SynthesisSet
from pipeline.llm.errors import ConfigError
from pipeline.plan import CallPlan, PlannedCall
from pipeline.records import AgreementRow, AnswerRecord, AnswerSet, Judgement, JudgementSet
from pipeline.report.runs import runs_dir
from pipeline.stages import CallStage, CheckVerdict, DataStage, Stage, StageCheck, StageInputs

if TYPE_CHECKING:
    from pipeline.config import JudgeConfig
    from pipeline.experiments.classify_stages import ClassifyStages

SOURCE = "source_snapshot"
ANSWERS = "answers"
HARD_CHECKS = "hard_checks"
JUDGE = "judge"
JUDGEMENTS = "judgements"
CANARY_DRIFT = "canary_drift"
PERSPECTIVES = "perspectives"
SYNTHESIS = "synthesis"
SYNTHESES = "syntheses"
FIRST_RUN = "first"
MAX_CHANGED_IN_METADATA = 50
MAX_LISTED_FAILURES = 50


@dataclass(frozen=True)
class EvalStages:
    """The evaluation stages of one classify-family experiment (bound to its ClassifyStages)."""

    classify: ClassifyStages

    def declare(self) -> list[Stage]:
        """The evaluation stages this experiment's file asks for (after `answers`)."""
        config = self.classify.kind.config
        stages: list[Stage] = []
        if config.checks is not None:
            stages.append(
                DataStage(
                    HARD_CHECKS,
                    (ANSWERS,),
                    self.hard_checks,
                    HardCheckSet,
                    "Hard checks (JSON, schema, labels, regex, length, ranges, custom) on every answer.",
                    role="analysis",
                    checks=(
                        StageCheck(
                            "hard_checks_pass_rate",
                            self.hard_checks_verdict,
                            "Every hard check passes on at least checks.min_pass_rate of the answers.",
                        ),
                    ),
                )
            )
        if config.judge is not None:
            stages += [
                CallStage(
                    JUDGE,
                    (SOURCE, ANSWERS),
                    self.plan_judges,
                    "Each valid answer graded by every judge model, k times, against the rubric (JSON score).",
                ),
                DataStage(
                    JUDGEMENTS,
                    (JUDGE, ANSWERS, SOURCE),
                    self.judgements,
                    JudgementSet,
                    "Judgements, the majority vote per answer, flaky answers, agreement between judges and with gold.",
                    role="analysis",
                ),
            ]
        if config.canary is not None:
            stages.append(
                DataStage(
                    CANARY_DRIFT,
                    (SOURCE, ANSWERS),
                    self.canary_drift,
                    CanaryDrift,
                    "This run's answers against the canary's baseline run: agreement, changed items, accuracy change.",
                    role="analysis",
                    checks=(
                        StageCheck(
                            "canary_no_drift",
                            self.canary_verdict,
                            "Fails when the answers drifted from the baseline run past canary.drift's thresholds.",
                        ),
                    ),
                )
            )
        if config.perspectives is not None:
            stages += [
                CallStage(
                    PERSPECTIVES,
                    (SOURCE,),
                    self.plan_perspectives,
                    "One call per item x analyst role x model: each role's system prompt on the item.",
                ),
                CallStage(
                    SYNTHESIS,
                    (SOURCE, PERSPECTIVES),
                    self.plan_syntheses,
                    "One call per item and model combining the roles' answers (planned once they are stored).",
                ),
                DataStage(
                    SYNTHESES,
                    (SOURCE, PERSPECTIVES, SYNTHESIS),
                    self.syntheses,
                    SynthesisSet,
                    "Per item: every analyst role's answer and their synthesis.",
                    role="analysis",
                ),
            ]
        return stages

    # -- hard checks ------------------------------------------------------------------------------------
    def hard_checks(self, inputs: StageInputs) -> HardCheckSet:
        """Every configured check on every answer's text; a missing answer fails every check."""
        config = self.classify.kind.config.checks
        assert config is not None
        rows: list[HardCheckRow] = []
        for answer in inputs.record(ANSWERS, AnswerSet).rows:
            text = None if answer.status == "missing" else answer.raw_response
            for result in run_checks({answer.item_id: text}, config):
                rows.append(
                    HardCheckRow(
                        answer.item_id,
                        answer.alias,
                        answer.repeat,
                        answer.call_id,
                        result.check,
                        result.passed,
                        result.detail,
                    )
                )
        return HardCheckSet(tuple(rows), config.min_pass_rate)

    def hard_checks_verdict(self, inputs: StageInputs) -> CheckVerdict:
        """The lowest pass rate of any check against the threshold, with the checks under it."""
        record = inputs.record(HARD_CHECKS, HardCheckSet)
        verdict = pass_rate_ok(record.summary(), record.min_pass_rate)
        metadata = {
            "lowest_pass_rate": round(verdict.lowest_rate, 4),
            "min_pass_rate": verdict.threshold,
            "checks_below": list(verdict.below),
            "failures": len(record.failures()),
        }
        description = (
            ""
            if verdict.ok
            else f"checks {', '.join(verdict.below)} pass on {verdict.lowest_rate:.1%} of the answers at the lowest, "
            f"under min_pass_rate {verdict.threshold:.1%}; see the report's hard-check failures"
        )
        return CheckVerdict(verdict.ok, metadata, description)

    # -- judges -----------------------------------------------------------------------------------------
    def _judge(self) -> JudgeConfig:
        judge = self.classify.kind.config.judge
        assert judge is not None
        return judge

    def _judged(self, inputs: StageInputs) -> list[tuple[AnswerRecord, Item]]:
        """The answers a judge grades: valid ones of items in the snapshot."""
        items = {item.item_id: item for item in self.classify.items(inputs)}
        rows = inputs.record(ANSWERS, AnswerSet).rows
        return [(row, items[row.item_id]) for row in rows if row.status == "ok" and row.item_id in items]

    def judge_spec(self, inputs: StageInputs, alias: str, row: AnswerRecord, item: Item, repeat: int) -> CallSpec:
        """One judgement call: the same (item, answer, judge, repeat) always gives the same call (and call id)."""
        judge = self._judge()
        config = self.classify.kind.config
        model = inputs.context.zoo.get(alias)
        text = item.fields.get(config.dataset.text_field)
        shown = text if text is not None else {k: v for k, v in item.fields.items() if k != config.dataset.gold_field}
        schema = judge_score_schema(judge)
        return CallSpec(
            alias=alias,
            model=model.model,
            version=model.version,
            api_base=model.api_base,
            messages=tuple(judge_messages(judge, shown, row.label or "", item.gold if judge.show_expected else None)),
            temperature=judge.temperature,
            max_tokens=judge.max_tokens,
            response_format={"type": "json_schema", "json_schema": {"name": "judgement", "schema": schema}},
            seed=0,
            repeat=repeat,
            item_id=row.item_id,
            purpose="judge",
        )

    def _judge_aliases(self, inputs: StageInputs) -> list[str]:
        return list(dict.fromkeys(inputs.context.resolve_alias(alias) for alias in self._judge().models))

    def plan_judges(self, inputs: StageInputs) -> CallPlan:
        """Answers x judges x repeats; the same answer to the same item is judged once (identical calls merge)."""
        calls = [
            PlannedCall(self.judge_spec(inputs, alias, row, item, repeat), (row.item_id,))
            for alias in self._judge_aliases(inputs)
            for row, item in self._judged(inputs)
            for repeat in range(self._judge().repeats)
        ]
        return CallPlan.build(inputs.context.config.name, JUDGE, calls, inputs.input_digests([ANSWERS]))

    def judgements(self, inputs: StageInputs) -> JudgementSet:
        """Every judgement (unreadable or missing ones kept, invalid, with the reason), votes, flaky, agreement."""
        judge = self._judge()
        responses = inputs.responses(JUDGE)
        judged = self._judged(inputs)
        per_item: dict[str, int] = defaultdict(int)
        for row, _ in judged:
            per_item[row.item_id] += 1
        rows: list[Judgement] = []
        for alias in self._judge_aliases(inputs):
            named = judge.model_copy(update={"name": alias})
            for row, item in judged:
                unit = row.item_id if per_item[row.item_id] == 1 else f"{row.item_id}/{row.alias}/r{row.repeat}"
                for repeat in range(judge.repeats):
                    spec = self.judge_spec(inputs, alias, row, item, repeat)
                    record = responses.answer(spec.call_id) if responses.current else None
                    if record is None:
                        missing = "no stored response (the call failed or has not run): assay resume"
                        reading = Reading(item_id=unit, judge=alias, repeat=repeat, valid=False, error=missing)
                    else:
                        reading = parse_judgement(record.text, named, item_id=unit, repeat=repeat)
                    rows.append(
                        Judgement(
                            row.item_id,
                            unit,
                            row.call_id,
                            row.label or "",
                            alias,
                            repeat,
                            spec.call_id,
                            reading.verdict,
                            reading.score,
                            reading.reason,
                            reading.valid,
                            reading.error,
                        )
                    )
        readings = [_reading(row) for row in rows]
        votes = votes_by_item(readings, judge.tie_verdict) if readings else {}
        gold = {
            (row.item_id, row.label or ""): answers_match(item.gold, row.label)
            for row, item in judged
            if item.gold is not None
        }
        return JudgementSet(
            tuple(rows),
            judge.verdicts[0],
            tuple(vote.model_dump(mode="json") for vote in votes.values()),
            tuple(item.model_dump(mode="json") for item in find_flaky(readings).flaky),
            agreement_rows(rows, judge.verdicts, gold, votes),
        )

    # -- canary -----------------------------------------------------------------------------------------
    def canary_drift(self, inputs: StageInputs) -> CanaryDrift:
        """Compare this run's answers (per item, its lowest repeat) with the baseline run's (drift.py)."""
        config = self.classify.kind.config
        canary = config.canary
        assert canary is not None
        current = answers_by_item(inputs.record(ANSWERS, AnswerSet).rows)
        folder = baseline_folder(config.name, canary.baseline)
        if folder is None:
            note = f"no earlier run of {config.name} under {runs_dir()}: this run is the baseline of the next"
            return CanaryDrift("(none yet)", None, DriftAlarm(alarm=False, reasons=()), note)
        baseline = baseline_answers(folder)
        gold = {item.item_id: item.gold for item in self.classify.items(inputs) if item.gold is not None}
        result = compare_runs(baseline, current, gold or None)
        return CanaryDrift(str(folder), result, drift_alarm(result, canary.drift))

    def canary_verdict(self, inputs: StageInputs) -> CheckVerdict:
        """Fails when drift_alarm fires; the changed items, agreement and thresholds go to its metadata."""
        record = inputs.record(CANARY_DRIFT, CanaryDrift)
        canary = self.classify.kind.config.canary
        assert canary is not None
        metadata: dict[str, Any] = {"baseline": record.baseline, "min_agreement": canary.drift.min_agreement}
        if record.result is not None:
            result = record.result
            metadata |= {
                "agreement": round(result.agreement.estimate, 4),
                "items": result.n_items,
                "changed_count": len(result.changed),
                "changed_items": [
                    {"item_id": item.item_id, "baseline": item.baseline, "canary": item.canary}
                    for item in result.changed[:MAX_CHANGED_IN_METADATA]
                ],
                "missing_in_canary": list(result.missing_in_canary),
            }
            if result.accuracy_change is not None:
                metadata["accuracy_change"] = round(result.accuracy_change, 4)
        metadata["reasons"] = list(record.alarm.reasons)
        return CheckVerdict(not record.alarm.alarm, metadata, "; ".join(record.alarm.reasons))

    # -- perspectives -> synthesis ----------------------------------------------------------------------
    def _item_fields(self, item: Item) -> dict[str, Any]:
        return {**item.fields, "item_id": item.item_id, **self.classify.kind.context()}

    def _free_text_spec(
        self, inputs: StageInputs, alias: str, item: Item, messages: list[dict[str, str]], purpose: str
    ) -> CallSpec:
        params = self.classify.kind.config.params
        model = inputs.context.zoo.get(alias)
        return CallSpec(
            alias=alias,
            model=model.model,
            version=model.version,
            api_base=model.api_base,
            messages=tuple(messages),
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=params.seed,
            item_id=item.item_id,
            purpose=purpose,
        )

    def role_spec(self, inputs: StageInputs, alias: str, item: Item, role: Role) -> CallSpec:
        """One role's call on one item (the same inputs always give the same call id)."""
        messages = role_messages(self._item_fields(item), role)
        return self._free_text_spec(inputs, alias, item, messages, f"perspective:{role.name}")

    def _role_answers(self, inputs: StageInputs, alias: str, item: Item) -> dict[str, str | None]:
        perspectives = self.classify.kind.config.perspectives
        assert perspectives is not None
        responses = inputs.responses(PERSPECTIVES)
        answers: dict[str, str | None] = {}
        for role in perspectives.roles:
            record = responses.answer(self.role_spec(inputs, alias, item, role).call_id) if responses.current else None
            answers[role.name] = None if record is None else record.text
        return answers

    def synthesis_spec(self, inputs: StageInputs, alias: str, item: Item) -> CallSpec | None:
        """The item's synthesis call from its roles' stored answers; None while one is missing (and not allowed)."""
        perspectives = self.classify.kind.config.perspectives
        assert perspectives is not None
        answers = self._role_answers(inputs, alias, item)
        if any(text is None for text in answers.values()) and not perspectives.allow_missing:
            return None  # planned by the next run, once `assay resume` has the missing role answers
        messages = synthesis_messages(self._item_fields(item), answers, perspectives)
        return self._free_text_spec(inputs, alias, item, messages, "synthesis")

    def plan_perspectives(self, inputs: StageInputs) -> CallPlan:
        """Items x roles x models."""
        perspectives = self.classify.kind.config.perspectives
        assert perspectives is not None
        calls = [
            PlannedCall(self.role_spec(inputs, alias, item, role), (item.item_id,))
            for alias in inputs.context.aliases()
            for item in self.classify.items(inputs)
            for role in perspectives.roles
        ]
        return CallPlan.build(inputs.context.config.name, PERSPECTIVES, calls, inputs.input_digests([SOURCE]))

    def plan_syntheses(self, inputs: StageInputs) -> CallPlan:
        """One synthesis call per item and model whose roles have all answered."""
        calls = []
        for alias in inputs.context.aliases():
            for item in self.classify.items(inputs):
                spec = self.synthesis_spec(inputs, alias, item)
                if spec is not None:
                    calls.append(PlannedCall(spec, (item.item_id,)))
        return CallPlan.build(
            inputs.context.config.name, SYNTHESIS, calls, inputs.input_digests([SOURCE, PERSPECTIVES])
        )

    def syntheses(self, inputs: StageInputs) -> SynthesisSet:
        """Every role's answer and the synthesis per item and model (None where a call has no answer)."""
        perspectives = self.classify.kind.config.perspectives
        assert perspectives is not None
        synthesis = inputs.responses(SYNTHESIS)
        roles: list[PerspectiveRow] = []
        combined: list[PerspectiveRow] = []
        for alias in inputs.context.aliases():
            for item in self.classify.items(inputs):
                answers = self._role_answers(inputs, alias, item)
                for role in perspectives.roles:
                    call_id = self.role_spec(inputs, alias, item, role).call_id
                    roles.append(PerspectiveRow(item.item_id, alias, role.name, call_id, answers[role.name]))
                spec = self.synthesis_spec(inputs, alias, item)
                record = synthesis.answer(spec.call_id) if spec is not None and synthesis.current else None
                text = None if record is None else record.text
                combined.append(PerspectiveRow(item.item_id, alias, SYNTHESIS, spec.call_id if spec else "", text))
        return SynthesisSet(tuple(roles), tuple(combined))

    # -- report -----------------------------------------------------------------------------------------
    def report_sections(self, inputs: StageInputs, answers: AnswerSet) -> list[str]:
        """Markdown sections of the evaluation stages present in this experiment."""
        config = self.classify.kind.config
        sections: list[str] = []
        if config.checks is not None:
            sections += hard_check_section(inputs.record(HARD_CHECKS, HardCheckSet))
        if config.judge is not None:
            sections += judge_section(inputs.record(JUDGEMENTS, JudgementSet))
        if config.canary is not None:
            sections += canary_section(inputs.record(CANARY_DRIFT, CanaryDrift))
        if config.perspectives is not None:
            sections += synthesis_section(inputs.record(SYNTHESES, SynthesisSet))
        return sections


_RUN_FOLDER = re.compile(r"^(?P<stamp>\d{4}-\d\d-\d\d-\d{6})(?:-(?P<n>\d+))?$")


def baseline_folder(experiment: str, baseline: str) -> Path | None:
    """The baseline run folder: the one named, or for 'first' the oldest run folder of `experiment` (None if none)."""
    if baseline != FIRST_RUN:
        folder = Path(baseline) if Path(baseline).is_absolute() else REPO_ROOT / baseline
        if not (folder / "outputs" / "results.jsonl").exists():
            raise ConfigError(
                f"canary.baseline {baseline!r}: {folder}/outputs/results.jsonl does not exist; name a run folder "
                f"of {experiment} (runs/{experiment}-<date>) or use 'first'"
            )
        return folder
    runs: list[tuple[str, int, Path]] = []
    for folder in runs_dir().glob(f"{experiment}-*"):
        found = _RUN_FOLDER.match(folder.name[len(experiment) + 1 :])
        if found and (folder / "outputs" / "results.jsonl").exists():
            runs.append((found["stamp"], int(found["n"] or 1), folder))
    return min(runs)[2] if runs else None


def baseline_answers(folder: Path) -> dict[str, Any]:
    """item id -> label of a run folder's results (its lowest repeat; None when invalid or missing)."""
    lines = (folder / "outputs" / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [AnswerRecord.from_json(json.loads(line)) for line in lines if line.strip()]
    return answers_by_item(rows)


def synthesis_section(record: SynthesisSet) -> list[str]:
    """Markdown: per item and model, how many roles answered and the synthesis (shortened)."""
    answered: dict[tuple[str, str], int] = defaultdict(int)
    roles: dict[tuple[str, str], int] = defaultdict(int)
    for row in record.perspectives:
        roles[(row.item_id, row.alias)] += 1
        answered[(row.item_id, row.alias)] += row.text is not None
    lines = ["## Perspectives and synthesis", "", "| item | model | roles answered | synthesis |", "|---|---|---:|---|"]
    for row in record.syntheses:
        key = (row.item_id, row.alias)
        text = "(not yet: a role's answer or the synthesis call is missing)" if row.text is None else _cell(row.text)
        lines.append(f"| {row.item_id} | {row.alias} | {answered[key]}/{roles[key]} | {text} |")
    return [*lines, "", f"Full texts: stages/{SYNTHESES}.json; every call: assay trace <call id>.", ""]


def canary_section(record: CanaryDrift) -> list[str]:
    """Markdown: agreement with the baseline, accuracy change, the alarm's reasons and the changed items."""
    lines = ["## Canary drift", "", f"Baseline: {record.baseline}."]
    if record.result is None:
        return [*lines, "", record.note, ""]
    result = record.result
    agreement = result.agreement
    lines += [
        "",
        f"Agreement with the baseline: {agreement.estimate:.1%} [{agreement.low:.1%}, {agreement.high:.1%}] on "
        f"{result.n_items} items; {len(result.changed)} changed.",
    ]
    if result.accuracy_change is not None and result.mcnemar is not None:
        lines.append(f"Accuracy change: {result.accuracy_change:+.1%} (McNemar p = {result.mcnemar.p_value:.3g}).")
    lines += ["", "**Alarm**: " + "; ".join(record.alarm.reasons) if record.alarm.alarm else "No drift alarm."]
    if result.changed:
        lines += ["", "| item | baseline | canary | expected |", "|---|---|---|---|"]
        for item in result.changed[:MAX_LISTED_FAILURES]:
            lines.append(f"| {item.item_id} | {item.baseline} | {item.canary} | {item.expected} |")
    return [*lines, ""]


def _reading(row: Judgement) -> Reading:
    return Reading(
        item_id=row.unit,
        judge=row.judge,
        repeat=row.repeat,
        score=row.score,
        verdict=row.verdict,
        reason=row.reason,
        valid=row.valid,
        error=row.error,
    )


def _majority(verdicts: Sequence[str | None]) -> str | None:
    """A judge's verdict on a unit over its repeats: the most frequent valid one; None on a tie or none."""
    counts: dict[str, int] = defaultdict(int)
    for verdict in verdicts:
        if verdict is not None:
            counts[verdict] += 1
    if not counts:
        return None
    top = max(counts.values())
    leaders = [verdict for verdict, count in counts.items() if count == top]
    return leaders[0] if len(leaders) == 1 else None


def _figure(measure: str, raters: str, compute: Callable[[], tuple[float, int]]) -> AgreementRow:
    """An agreement figure, or the reason it is undefined (e.g. every rating the same)."""
    import numpy as np

    try:
        with np.errstate(divide="ignore", invalid="ignore"):  # an undefined figure is reported, not warned about
            value, n = compute()
    except ValueError as exc:
        return AgreementRow(measure, raters, None, 0, str(exc))
    return AgreementRow(measure, raters, None if value != value else value, n)  # NaN: undefined


def agreement_rows(
    rows: Sequence[Judgement],
    verdicts: Sequence[str],
    gold_correct: dict[tuple[str, str], bool],
    votes: dict[str, Any],
) -> tuple[AgreementRow, ...]:
    """Agreement between judges (Cohen for two, Fleiss for three or more, Krippendorff for any), between each
    judge's repeats (Krippendorff), and of each judge and the majority vote with gold."""
    from pipeline.stats.agreement import (
        agreement_with_gold,
        cohens_kappa_two_raters,
        fleiss_kappa_raters,
        krippendorff_alpha,
    )

    judges = sorted({row.judge for row in rows})
    units = sorted({row.unit for row in rows})
    by_judge_unit: dict[tuple[str, str], list[str | None]] = defaultdict(list)
    repeats: dict[tuple[str, str], dict[int, str | None]] = defaultdict(dict)
    answer_of: dict[str, tuple[str, str]] = {}
    for row in rows:
        verdict = row.verdict if row.valid else None
        by_judge_unit[(row.judge, row.unit)].append(verdict)
        repeats[(row.judge, row.unit)][row.repeat] = verdict
        answer_of[row.unit] = (row.item_id, row.answer)
    ratings: dict[str, list[Hashable | None]] = {
        judge: [_majority(by_judge_unit[(judge, unit)]) for unit in units] for judge in judges
    }
    out: list[AgreementRow] = []
    categories = list(verdicts)
    if len(judges) == 2:
        a, b = judges
        out.append(
            _figure(
                "Cohen kappa",
                f"{a} vs {b}",
                lambda: _kappa(cohens_kappa_two_raters(ratings[a], ratings[b], categories)),
            )
        )
    if len(judges) >= 3:
        complete = [
            [ratings[judge][index] for judge in judges]
            for index in range(len(units))
            if all(ratings[judge][index] is not None for judge in judges)
        ]
        out.append(
            _figure(
                "Fleiss kappa",
                ", ".join(judges),
                lambda: (fleiss_kappa_raters(complete, categories).kappa, len(complete)),
            )
        )
    if len(judges) >= 2:
        out.append(
            _figure(
                "Krippendorff alpha",
                ", ".join(judges),
                lambda: _alpha(krippendorff_alpha([ratings[judge] for judge in judges], "nominal", categories)),
            )
        )
    k = max((len(value) for value in repeats.values()), default=0)
    if k >= 2:
        for judge in judges:
            by_repeat = [[repeats[(judge, unit)].get(r) for unit in units] for r in range(k)]
            out.append(
                _figure(
                    "Krippendorff alpha",
                    f"{judge}: its {k} repeats",
                    lambda by_repeat=by_repeat: _alpha(krippendorff_alpha(by_repeat, "nominal", categories)),  # type: ignore[misc]
                )
            )
    labelled = [index for index, unit in enumerate(units) if answer_of[unit] in gold_correct]
    if labelled:
        expected = [verdicts[0] if gold_correct[answer_of[units[i]]] else verdicts[1] for i in labelled]
        raters = {judge: [ratings[judge][i] for i in labelled] for judge in judges}
        if len(judges) >= 2 or k >= 2:
            raters["majority vote"] = [votes[units[i]].verdict if units[i] in votes else None for i in labelled]
        for name, given in raters.items():
            result = agreement_with_gold(expected, given, categories)
            out.append(AgreementRow("accuracy vs gold", name, result.accuracy.estimate, len(labelled)))
            kappa: float | None = result.kappa.kappa
            note = ""
            if kappa != kappa:  # NaN
                kappa, note = None, "undefined: one verdict only (chance agreement is 1)"
            out.append(AgreementRow("Cohen kappa vs gold", name, kappa, len(labelled), note))
    return tuple(out)


def _kappa(result: Any) -> tuple[float, int]:
    return float(result.kappa), int(result.n)


def _alpha(result: Any) -> tuple[float, int]:
    return float(result.alpha), int(result.n_units)


def judge_section(record: JudgementSet) -> list[str]:
    """Markdown: verdicts per judge, the agreement table, and the flaky answers."""
    lines = ["## Judges", "", f"| judge | judged | {record.positive_verdict} | invalid |", "|---|---:|---:|---:|"]
    by_judge: dict[str, list[Judgement]] = defaultdict(list)
    for row in record.rows:
        by_judge[row.judge].append(row)
    for judge, rows in sorted(by_judge.items()):
        valid = [row for row in rows if row.valid]
        positive = sum(row.verdict == record.positive_verdict for row in valid)
        lines.append(f"| {judge} | {len(valid)} | {positive} | {len(rows) - len(valid)} |")
    if record.agreement:
        lines += ["", "### Agreement", "", "| measure | raters | value | n | note |", "|---|---|---:|---:|---|"]
        for figure in record.agreement:
            value = "n/a" if figure.value is None else f"{figure.value:.3f}"
            lines.append(f"| {figure.measure} | {figure.raters} | {value} | {figure.n} | {_cell(figure.note)} |")
    ties = [vote for vote in record.votes if vote.get("tie")]
    if ties:
        lines += ["", f"Tied votes: {', '.join(str(vote['item_id']) for vote in ties)}."]
    if record.flaky:
        lines += ["", "### Flaky answers (a judge's repeats disagree)", "", "| answer | judge | verdicts | agreement |"]
        lines.append("|---|---|---|---:|")
        for item in record.flaky:
            counts = ", ".join(f"{verdict}: {count}" for verdict, count in item["counts"].items())
            lines.append(f"| {item['item_id']} | {item['judge']} | {counts} | {item['agreement']:.0%} |")
    return [*lines, ""]


def hard_check_section(record: HardCheckSet) -> list[str]:
    """Markdown: pass rate per check against the threshold, then every failure (the first 50)."""
    lines = ["## Hard checks", "", f"Threshold: every check passes on at least {record.min_pass_rate:.1%}.", ""]
    lines += ["| check | passed | failed | pass rate |", "|---|---:|---:|---:|"]
    for stat in record.summary().per_check:
        mark = "" if stat.pass_rate >= record.min_pass_rate else " (below)"
        lines.append(f"| {stat.check} | {stat.passed} | {stat.failed} | {stat.pass_rate:.1%}{mark} |")
    failures = record.failures()
    if failures:
        lines += ["", "### Failures", "", "| item | model | repeat | check | why |", "|---|---|---:|---|---|"]
        for row in failures[:MAX_LISTED_FAILURES]:
            lines.append(f"| {row.item_id} | {row.alias} | {row.repeat} | {row.check} | {_cell(row.detail)} |")
        if len(failures) > MAX_LISTED_FAILURES:
            lines.append(f"\n{len(failures) - MAX_LISTED_FAILURES} more failures in stages/{HARD_CHECKS}.json.")
    return [*lines, ""]


def _cell(text: str, limit: int = 120) -> str:
    """Text safe inside a Markdown table cell."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
