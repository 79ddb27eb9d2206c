"""Benchmark the embedded `local/qwen2.5-coder-1.5b-instruct` model through litellm.

Prints: model assembly/verification and load time, prompt and generation speed (tokens/s, from
llama.cpp's own counters), end-to-end items/s, and accuracy on 50 short texts with known topics, all
classified with the "Choose the topic of this text from: ..." wording and a JSON-schema enum. With
`--compare-wording N` it also asks N items (spread over the topics) as yes/no questions (one call per
topic; the item is right when exactly its gold topic gets "yes") and prints both accuracies.

Run: `python -m benchmarks.local_model [--items 50] [--threads K] [--compare-wording 10]`
(needs `pip install '.[local]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402  (the cost-map switch above must be set before litellm is imported)

from pipeline.llm.local_model import MODEL_NAME, available_cpus  # noqa: E402
from pipeline.llm.local_provider import LocalLLM, register_local_provider  # noqa: E402

MODEL_ID = f"local/{MODEL_NAME}"
TOPICS = [
    "sports",
    "cooking",
    "finance",
    "weather",
    "computing",
    "health",
    "travel",
    "music",
    "politics",
    "science",
]

# (text, gold topic): 5 per topic, written for this benchmark.
ITEMS: list[tuple[str, str]] = [
    ("The goalkeeper saved a penalty in the final minute to keep the clean sheet.", "sports"),
    ("She finished the marathon in under three hours, a personal best.", "sports"),
    ("The coach benched two starters after they missed practice before the playoff game.", "sports"),
    ("Serena's backhand down the line sealed the third set.", "sports"),
    ("The cyclist attacked on the final climb and took the yellow jersey.", "sports"),
    ("Simmer the onions slowly until golden, then deglaze the pan with white wine.", "cooking"),
    ("Knead the dough for ten minutes and let it rise in a warm place for an hour.", "cooking"),
    ("Season the steak generously and sear it in a very hot cast-iron skillet.", "cooking"),
    ("For a creamier risotto, add the stock one ladle at a time and keep stirring.", "cooking"),
    ("Toast the cumin seeds before grinding them to bring out their aroma.", "cooking"),
    ("Shares of the retailer fell 8% after it cut its annual profit forecast.", "finance"),
    ("The bond yield curve inverted again, which investors read as a recession signal.", "finance"),
    ("She moved her savings into a low-cost index fund to reduce fees.", "finance"),
    ("The company announced a two-for-one stock split and a higher dividend.", "finance"),
    ("Mortgage rates climbed to their highest level in two decades this quarter.", "finance"),
    ("A cold front will bring snow showers and freezing temperatures overnight.", "weather"),
    ("Forecasters expect a sunny weekend with highs around 28 degrees.", "weather"),
    ("The hurricane strengthened to category four as it approached the islands.", "weather"),
    ("Dense morning fog is reducing visibility on the motorway.", "weather"),
    ("A heat advisory is in effect until Friday as humidity stays high.", "weather"),
    ("The update fixes a memory leak in the kernel's network driver.", "computing"),
    ("He rewrote the slow Python loop in Rust and the job now runs ten times faster.", "computing"),
    ("The new graphics card doubles ray-tracing performance over the last generation.", "computing"),
    ("Our database migration failed because of a missing index on the orders table.", "computing"),
    ("The laptop's solid-state drive boots the operating system in eight seconds.", "computing"),
    ("Regular exercise and enough sleep lower the risk of heart disease.", "health"),
    ("The clinic offers free flu vaccinations to everyone over sixty-five.", "health"),
    ("Doctors recommend drinking water often when you have a fever.", "health"),
    ("The patient recovered quickly after knee surgery and physiotherapy.", "health"),
    ("Too much sugar in the diet is linked to type 2 diabetes.", "health"),
    ("We took the night train from Vienna to Venice and woke up by the lagoon.", "travel"),
    ("Pack light: the budget airline charges extra for checked luggage.", "travel"),
    ("The hostel near the old town was cheap, clean and full of backpackers.", "travel"),
    ("Our passports were stamped at the border before we boarded the ferry.", "travel"),
    ("They spent two weeks island-hopping and renting scooters on each island.", "travel"),
    ("The orchestra opened with a Beethoven symphony and closed with Ravel.", "music"),
    ("Her new album mixes jazz chords with electronic beats.", "music"),
    ("The guitarist broke a string during the solo but kept playing.", "music"),
    ("The band announced a reunion tour with twenty concerts across Europe.", "music"),
    ("He practises scales on the piano for an hour every morning.", "music"),
    ("The senate passed the budget bill after a long night of debate.", "politics"),
    ("The prime minister called a snap election for next spring.", "politics"),
    ("Opposition parties formed a coalition to challenge the governing party.", "politics"),
    ("Voters will decide on the referendum about electoral reform in June.", "politics"),
    ("The president vetoed the law, sending it back to parliament.", "politics"),
    ("Astronomers detected water vapour in the atmosphere of a distant exoplanet.", "science"),
    ("The experiment measured how fast enzymes break down proteins at different temperatures.", "science"),
    ("Physicists cooled the atoms to a fraction of a degree above absolute zero.", "science"),
    ("The fossil suggests feathered dinosaurs lived earlier than thought.", "science"),
    ("Researchers sequenced the genome of a deep-sea bacterium.", "science"),
]

SYSTEM = "You label short texts. Answer with JSON only."


@dataclass
class CallStats:
    """Accumulated figures of a batch of calls."""

    calls: int = 0
    correct: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class PerfCounters:
    """llama.cpp's cumulative timing counters for one context."""

    prompt_ms: float
    prompt_tokens: int
    eval_ms: float
    eval_tokens: int


def read_perf(handler: LocalLLM) -> PerfCounters:
    """Read llama.cpp's own prompt/eval timing counters for the local model's context."""
    import llama_cpp

    llama = handler.model(MODEL_NAME).llama
    data = llama_cpp.llama_perf_context(llama._ctx.ctx)
    return PerfCounters(
        prompt_ms=data.t_p_eval_ms,
        prompt_tokens=data.n_p_eval,
        eval_ms=data.t_eval_ms,
        eval_tokens=data.n_eval,
    )


def choose_messages(text: str) -> list[dict[str, str]]:
    """The choose-from-list wording."""
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f"Choose the topic of this text from: {', '.join(TOPICS)}.\n\nText: {text}",
        },
    ]


def yes_no_messages(text: str, topic: str) -> list[dict[str, str]]:
    """The yes/no wording: one question per candidate topic."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Is this text about {topic}? Answer yes or no.\n\nText: {text}"},
    ]


def enum_format(field: str, values: list[str]) -> dict[str, Any]:
    """An OpenAI json_schema response_format with one enum field."""
    schema = {
        "type": "object",
        "properties": {field: {"type": "string", "enum": values}},
        "required": [field],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": field, "schema": schema}}


async def ask(messages: list[dict[str, str]], response_format: dict[str, Any], stats: CallStats) -> str:
    """One litellm call to the local model; returns the parsed enum value and updates `stats`."""
    started = time.perf_counter()
    response = await litellm.acompletion(
        model=MODEL_ID,
        messages=messages,
        response_format=response_format,
        temperature=0,
        seed=0,
        max_tokens=24,
        num_retries=0,
    )
    stats.wall_seconds += time.perf_counter() - started
    stats.calls += 1
    stats.prompt_tokens += response.usage.prompt_tokens
    stats.completion_tokens += response.usage.completion_tokens
    field = next(iter(response_format["json_schema"]["schema"]["properties"]))
    return str(json.loads(response.choices[0].message.content)[field])


async def run_choose(items: list[tuple[str, str]]) -> tuple[CallStats, list[str]]:
    """Classify every item with the choose-from-list wording (concurrently, as the pipeline would)."""
    stats = CallStats()
    fmt = enum_format("topic", TOPICS)
    started = time.perf_counter()
    labels = await asyncio.gather(*(ask(choose_messages(text), fmt, stats) for text, _ in items))
    stats.wall_seconds = time.perf_counter() - started  # end-to-end, not the sum of overlapping waits
    stats.correct = sum(label == gold for label, (_, gold) in zip(labels, items, strict=True))
    return stats, list(labels)


@dataclass
class YesNoStats:
    """Figures of the yes/no wording: per item, and per single question."""

    calls: CallStats
    gold_yes: int = 0
    """Questions about the gold topic answered "yes" (out of one per item)."""
    other_yes: int = 0
    """Questions about a wrong topic answered "yes" (false positives)."""
    other_questions: int = 0


async def run_yes_no(items: list[tuple[str, str]]) -> YesNoStats:
    """Classify items by asking one yes/no question per topic; right when only the gold topic gets yes."""
    stats = YesNoStats(calls=CallStats())
    fmt = enum_format("answer", ["yes", "no"])
    started = time.perf_counter()
    for text, gold in items:
        answers = [await ask(yes_no_messages(text, topic), fmt, stats.calls) for topic in TOPICS]
        yes = {topic for topic, answer in zip(TOPICS, answers, strict=True) if answer == "yes"}
        stats.calls.correct += yes == {gold}
        stats.gold_yes += gold in yes
        stats.other_yes += len(yes - {gold})
        stats.other_questions += len(TOPICS) - 1
    stats.calls.wall_seconds = time.perf_counter() - started
    return stats


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=len(ITEMS), help="how many of the 50 items to classify")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its own)")
    parser.add_argument("--compare-wording", type=int, default=0, metavar="N", help="also run yes/no on N items")
    args = parser.parse_args()
    items = ITEMS[: args.items]

    handler = register_local_provider(LocalLLM(n_threads=args.threads))
    started = time.perf_counter()
    loaded = handler.model(MODEL_NAME)
    ready = time.perf_counter() - started
    threads = f"{loaded.llama.n_threads} (prompt: {loaded.llama.n_threads_batch})"
    print(f"model: {MODEL_ID} ({loaded.path}), CPUs: {available_cpus()}, threads: {threads}")
    print(f"assemble/verify + load: {ready:.2f} s (llama.cpp load alone: {loaded.load_seconds:.2f} s)")

    before = read_perf(handler)
    stats, labels = asyncio.run(run_choose(items))
    after = read_perf(handler)
    prompt_tps = (after.prompt_tokens - before.prompt_tokens) / max(after.prompt_ms - before.prompt_ms, 1e-9) * 1e3
    gen_tps = (after.eval_tokens - before.eval_tokens) / max(after.eval_ms - before.eval_ms, 1e-9) * 1e3
    print(
        f"choose-from-list: {stats.calls} items in {stats.wall_seconds:.1f} s = "
        f"{stats.calls / stats.wall_seconds:.2f} items/s"
    )
    print(
        f"  tokens: {stats.prompt_tokens} prompt, {stats.completion_tokens} completion "
        f"({stats.completion_tokens / stats.calls:.1f}/item)"
    )
    print(
        f"  completion tokens / end-to-end s: {stats.completion_tokens / stats.wall_seconds:.1f} tok/s; "
        f"llama.cpp counters: generation {gen_tps:.1f} tok/s, prompt processing {prompt_tps:.1f} tok/s"
    )
    print(f"  accuracy: {stats.correct}/{stats.calls} = {stats.correct / stats.calls:.0%}")
    wrong = [(text[:50], gold, label) for (text, gold), label in zip(items, labels, strict=True) if label != gold]
    for text, gold, label in wrong:
        print(f"    wrong: {text!r}... gold={gold} got={label}")

    if args.compare_wording:
        # Spread over the list so every topic appears (the items are grouped by topic).
        step = max(len(items) // args.compare_wording, 1)
        picked = list(range(0, len(items), step))[: args.compare_wording]
        subset = [items[i] for i in picked]
        subset_choose = sum(labels[i] == items[i][1] for i in picked)
        yes_no = asyncio.run(run_yes_no(subset))
        print(f"wording on {len(subset)} items (one every {step}):")
        print(f"  choose-from-list: {subset_choose}/{len(subset)} correct, 1 call per item")
        calls = yes_no.calls
        print(
            f"  yes/no per topic: {calls.correct}/{len(subset)} correct (only the gold topic answered yes), "
            f"{calls.calls} calls in {calls.wall_seconds:.1f} s"
        )
        print(
            f"    gold topic answered yes: {yes_no.gold_yes}/{len(subset)}; wrong topics answered yes: "
            f"{yes_no.other_yes}/{yes_no.other_questions}"
        )


if __name__ == "__main__":
    main()
