"""Measure the LoRA classifier: seconds per training step and accuracy on a held-out-vocabulary task.

Run from the repository root (needs the local extra, works offline):

    HF_HUB_OFFLINE=1 python benchmarks/lora_train.py [--device auto] [--json out.json]

1. Speed: optimizer steps at batch 16 x 128 tokens (every text is longer than 128 tokens, so each batch is
   exactly 16 x 128); the first steps are warm-up and left out of the median.
2. Accuracy: a synthetic 4-topic task generated here, where the test set uses *other* topic words and
   *other* sentence templates than the training set, one topic word per text instead of two. A
   bag-of-words model cannot transfer (it never saw the test words); the pretrained encoder has to.
   Chance is 25%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Allow `python benchmarks/lora_train.py` from a checkout without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.ensemble.lora import LoraTrainingConfig, train_lora_classifier  # noqa: E402


def _words(line: str) -> list[str]:
    return [w.strip() for w in line.split(",")]


# Topic words: the first line is used in training texts, the second only in test texts.
TRAIN_WORDS: dict[str, list[str]] = {
    "sports": _words("football, goalkeeper, referee, tennis, marathon, stadium, playoffs, coach"),
    "finance": _words("stocks, dividend, interest rates, bank loan, inflation, bonds, mortgage, investors"),
    "cooking": _words("recipe, oven, garlic, frying pan, dough, soup, chef, spices"),
    "technology": _words("software, laptop, compiler, smartphone, database, processor, algorithm, cloud server"),
}
TEST_WORDS: dict[str, list[str]] = {
    "sports": _words("basketball, striker, olympics, umpire, hockey, sprinter, tournament, quarterback"),
    "finance": _words(
        "hedge fund, shareholders, central bank, bankruptcy, portfolio, stock exchange, credit score, pension fund"
    ),
    "cooking": _words("baking, omelette, cutting board, roast chicken, whisk, casserole, pastry, saucepan"),
    "technology": _words(
        "operating system, microchip, programmer, wifi router, source code, graphics card, cybersecurity, semiconductor"
    ),
}
TRAIN_TEMPLATES = [
    "I read an article about {a} and {b} this morning.",
    "My neighbour keeps talking about {a}, especially {b}.",
    "The newsletter this week covered {a} and also {b}.",
    "We had a long discussion about {a} and {b} at work.",
    "There was a documentary on {a} followed by a piece on {b}.",
    "She asked me what I think about {a} and {b}.",
]
# Harder than training: one topic word per text, in sentences of another shape.
TEST_TEMPLATES = [
    "Yesterday's podcast was mostly about {a}.",
    "Everyone at the party had opinions on {a}.",
    "The magazine's cover story this month: {a}.",
    "My brother sent me a long message about {a}.",
]


@dataclass(frozen=True)
class Split:
    """Texts and their labels."""

    texts: list[str]
    labels: list[str]


@dataclass(frozen=True)
class SpeedResult:
    """Training speed at a fixed batch shape."""

    batch_size: int
    tokens_per_text: int
    steps_timed: int
    median_seconds_per_step: float
    min_seconds_per_step: float


@dataclass(frozen=True)
class AccuracyResult:
    """Held-out accuracy of one training run."""

    n_train: int
    n_test: int
    classes: int
    steps: int
    learning_rate: float
    train_seconds: float
    first_loss: float
    last_loss: float
    train_accuracy: float
    test_accuracy: float
    majority_baseline: float


def make_split(per_class: int, train: bool, seed: int) -> Split:
    """Generate ``per_class`` texts per topic from the train or the test words and templates."""
    rng = random.Random(seed)
    templates = TRAIN_TEMPLATES if train else TEST_TEMPLATES
    texts: list[str] = []
    labels: list[str] = []
    for topic, pool in (TRAIN_WORDS if train else TEST_WORDS).items():
        for _ in range(per_class):
            a, b = rng.sample(pool, 2)
            texts.append(rng.choice(templates).format(a=a, b=b))
            labels.append(topic)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return Split([texts[i] for i in order], [labels[i] for i in order])


def measure_speed(device: str, steps: int, warmup: int) -> SpeedResult:
    """Time optimizer steps at batch 16 x 128 tokens."""
    long_text = " ".join(["the committee reviewed the quarterly figures and discussed next steps"] * 20)
    n = 16 * 4
    texts = [f"{i} {long_text}" for i in range(n)]
    labels = ["a" if i % 2 else "b" for i in range(n)]
    config = LoraTrainingConfig(max_steps=warmup + steps, batch_size=16, max_length=128, device=device)
    clf = train_lora_classifier(texts, labels, config)
    timed = clf.step_seconds[warmup:]
    return SpeedResult(16, 128, len(timed), statistics.median(timed), min(timed))


def measure_accuracy(device: str, learning_rate: float, epochs: int, seed: int) -> AccuracyResult:
    """Train on the train words/templates, score on the disjoint test words/templates."""
    train = make_split(per_class=60, train=True, seed=seed)
    test = make_split(per_class=40, train=False, seed=seed + 1)
    config = LoraTrainingConfig(
        learning_rate=learning_rate, epochs=epochs, batch_size=16, max_length=64, seed=seed, device=device
    )
    t0 = time.perf_counter()
    clf = train_lora_classifier(train.texts, train.labels, config)
    seconds = time.perf_counter() - t0

    def accuracy(split: Split) -> float:
        predicted = clf.predict(split.texts)
        return sum(p == y for p, y in zip(predicted, split.labels, strict=True)) / len(split.labels)

    majority = max(test.labels.count(lab) for lab in set(test.labels)) / len(test.labels)
    return AccuracyResult(
        n_train=len(train.texts),
        n_test=len(test.texts),
        classes=len(TRAIN_WORDS),
        steps=len(clf.losses),
        learning_rate=learning_rate,
        train_seconds=seconds,
        first_loss=statistics.mean(clf.losses[:3]),
        last_loss=statistics.mean(clf.losses[-3:]),
        train_accuracy=accuracy(train),
        test_accuracy=accuracy(test),
        majority_baseline=majority,
    )


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write as JSON) the speed and accuracy figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<index>")
    parser.add_argument("--steps", type=int, default=10, help="timed steps for the speed figure")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps")
    parser.add_argument("--learning-rate", type=float, nargs="+", default=[LoraTrainingConfig().learning_rate])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(f"environment: {env}")
    results: dict[str, object] = {"environment": env}
    if not args.skip_speed:
        speed = measure_speed(args.device, args.steps, args.warmup)
        print(
            f"speed: batch {speed.batch_size} x {speed.tokens_per_text} tokens: "
            f"{speed.median_seconds_per_step:.3f} s/step median, {speed.min_seconds_per_step:.3f} min "
            f"({speed.steps_timed} steps after {args.warmup} warm-up)"
        )
        results["speed"] = asdict(speed)
    runs = []
    for lr in args.learning_rate:
        acc = measure_accuracy(args.device, lr, args.epochs, args.seed)
        print(
            f"accuracy: lr={lr:g} {acc.classes} classes, {acc.n_train} train / {acc.n_test} test "
            f"(held-out words and templates), {acc.steps} steps in {acc.train_seconds:.1f} s: "
            f"loss {acc.first_loss:.3f} -> {acc.last_loss:.3f}, train acc {acc.train_accuracy:.3f}, "
            f"test acc {acc.test_accuracy:.3f} (majority {acc.majority_baseline:.3f})"
        )
        runs.append(asdict(acc))
    results["accuracy"] = runs
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
