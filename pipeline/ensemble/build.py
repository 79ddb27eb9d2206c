"""Fit a whole ensemble from a task config: data, voters, out-of-fold stacker, conformal calibration.

Each step is a plain function of records in and records out, so the Dagster side can make every voter an asset
and call :func:`fit_arbiter` in another; :func:`fit_ensemble` strings them together for scripts and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.data.labelled import LabelledItem, Splits, load_labelled_csv, load_sms_spam, stratified_splits
from pipeline.ensemble.arbiter import Arbiter, PassResult, fit_stacker, out_of_fold_outputs, predict_outputs
from pipeline.ensemble.classical import ClassicalVoter, VariantSelection, select_classical_variant
from pipeline.ensemble.rules import RuleSet, RulesVoter, load_rules
from pipeline.ensemble.task_config import TaskConfig
from pipeline.ensemble.voter import TrainedVoter, Voter
from pipeline.ensemble.weak_supervision import (
    WeakSupervisionAnalysis,
    WeakSupervisionVoter,
    analyse_labeling_functions,
    build_labeling_functions,
)

__all__ = ["FittedEnsemble", "fit_arbiter", "fit_ensemble", "load_task_items", "load_task_splits"]


def load_task_items(config: TaskConfig) -> list[LabelledItem]:
    """The task's labelled items, from its data source."""
    if config.data.source == "sms_spam":
        return load_sms_spam()
    return load_labelled_csv(config.resolve(config.data.path or ""), config.text_field)


def load_task_splits(config: TaskConfig, extra_gold: Sequence[LabelledItem] = ()) -> Splits:
    """Seeded stratified splits of the task's items (plus reviewed items from feedback)."""
    items = load_task_items(config)
    known = {item.item_id for item in extra_gold}
    items = [item for item in items if item.item_id not in known] + list(extra_gold)
    return stratified_splits(items, config.data.train_fraction, config.data.calibration_fraction, config.data.seed)


@dataclass(frozen=True)
class FittedEnsemble:
    """Trained cheap voters, the calibrated arbiter, and the analyses a report shows."""

    config: TaskConfig
    voters: tuple[TrainedVoter, ...]
    arbiter: Arbiter
    classical_selection: VariantSelection | None
    labeling_functions: WeakSupervisionAnalysis | None

    def first_pass(self, items: Sequence[LabelledItem]) -> PassResult:
        """The arbiter's first pass on ``items`` (see :meth:`Arbiter.first_pass`)."""
        texts = [item.text for item in items]
        outputs = predict_outputs(self.voters, texts)
        return self.arbiter.first_pass([i.item_id for i in items], outputs, [self.config.slices_of(t) for t in texts])


def fit_arbiter(
    config: TaskConfig,
    untrained: Sequence[Voter],
    trained: Sequence[TrainedVoter],
    train: Sequence[LabelledItem],
    calibration: Sequence[LabelledItem],
) -> Arbiter:
    """Stacker on out-of-fold outputs of ``untrained`` over ``train``; conformal thresholds on ``calibration``."""
    oof = out_of_fold_outputs(untrained, train, config.arbiter.stacking_folds, config.data.seed)
    stacker = fit_stacker(oof, [item.label or "" for item in train])
    arbiter = Arbiter(config.label_names, config.arbiter, stacker)
    texts = [item.text for item in calibration]
    return arbiter.calibrate(
        predict_outputs(trained, texts),
        [item.label or "" for item in calibration],
        [config.slices_of(t) for t in texts],
        [s.name for s in config.slices],
        config.conformal.alpha,
        config.conformal.min_slice_items,
        config.conformal.per_slice,
    )


def fit_ensemble(config: TaskConfig, splits: Splits, include_lora: bool | None = None) -> FittedEnsemble:
    """Fit every enabled cheap voter on the training split, then the arbiter.

    ``include_lora`` overrides ``voters.lora.enabled`` (the LoRA voter is slow on a CPU).
    """
    labels = config.label_names
    untrained: list[Voter] = []
    trained: list[TrainedVoter] = []
    rule_set: RuleSet | None = None
    if config.voters.rules.enabled:
        rule_set = load_rules(config.resolve(config.voters.rules.file), labels)
        rules_voter = RulesVoter(rule_set)
        untrained.append(rules_voter)
        trained.append(rules_voter)
    selection: VariantSelection | None = None
    if config.voters.classical.enabled:
        selection = select_classical_variant(labels, splits.train, splits.calibration, config.voters.classical)
        untrained.append(ClassicalVoter(labels, selection.voter.variant, config.voters.classical))
        trained.append(selection.voter)
    analysis: WeakSupervisionAnalysis | None = None
    ws = config.voters.weak_supervision
    if ws.enabled:
        lfs = build_labeling_functions(rule_set, ws.keywords)
        ws_voter = WeakSupervisionVoter(labels, lfs, ws)
        untrained.append(ws_voter)
        trained.append(ws_voter.fit(splits.train))
        analysis = analyse_labeling_functions(lfs, labels, splits.calibration)
    if config.voters.lora.enabled if include_lora is None else include_lora:
        from pipeline.ensemble.lora_voter import LoraVoter

        lora = LoraVoter(labels, config.voters.lora)
        untrained.append(lora)
        trained.append(lora.fit(splits.train))
    if not untrained:
        raise ValueError(f"task {config.name!r} enables no cheap voter; enable rules, classical or weak_supervision")
    arbiter = fit_arbiter(config, untrained, trained, splits.train, splits.calibration)
    return FittedEnsemble(config, tuple(trained), arbiter, selection, analysis)
