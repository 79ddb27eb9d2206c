"""One prediction through the served ensemble: cheap voters and the arbiter, then the LLM tier with a timeout.

The LLM voter is asked only about texts the cheap tiers leave unsettled, through the same client and response
store as experiments (cache, cost, budget). When it does not answer within the timeout, or fails, the text is
abstained on with the reason; the cheap tiers' answers never wait on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.serving.artifact import LoadedArtifact

__all__ = ["ABSTAIN", "Answer", "LlmAsker", "Predictor", "client_asker"]

ABSTAIN = "ABSTAIN"


class LlmAsker(Protocol):
    """Ask the LLM voter one conversation; returns the answer's text and its cost in USD."""

    async def __call__(self, messages: list[dict[str, str]], params: dict[str, Any]) -> tuple[str, float]:
        """The answer text and cost."""
        ...


@dataclass(frozen=True)
class Answer:
    """The ensemble's answer about one text."""

    prediction: str
    """A label, or ABSTAIN."""
    confidence: float
    rule: str
    """The tier that decided (safety, consensus, conformal, llm) or 'abstain'."""
    reason: str
    abstain_reason: str | None
    voter_outputs: dict[str, dict[str, Any]]
    """Per voter: its label (None when it abstained), its confidence and explanation."""
    llm_called: bool
    llm_cost_usd: float
    latency_ms: float


@dataclass
class Predictor:
    """The live artifact, ready to answer."""

    artifact: LoadedArtifact
    asker: LlmAsker | None
    llm_timeout_s: float = 5.0

    @property
    def version(self) -> str:
        """The served artifact's version."""
        return self.artifact.manifest.version

    async def predict(self, texts: Sequence[str]) -> list[Answer]:
        """Answer `texts`; unsettled ones go to the LLM tier concurrently, each under the timeout."""
        from pipeline.ensemble.arbiter import predict_outputs

        start = time.perf_counter()
        bundle = self.artifact.bundle
        ids = [str(i) for i in range(len(texts))]
        outputs = await asyncio.to_thread(predict_outputs, bundle.voters, list(texts))
        first = bundle.arbiter.first_pass(ids, outputs, [bundle.task.slices_of(t) for t in texts])
        cheap_ms = (time.perf_counter() - start) * 1000
        answers: list[Answer] = []
        pending = [(i, d) for i, d in enumerate(first.decisions) if not d.settled]
        llm_results = await asyncio.gather(*(self._ask_llm(texts[i]) for i, _ in pending))
        llm_by_index = {i: result for (i, _), result in zip(pending, llm_results, strict=True)}
        for i, decision in enumerate(first.decisions):
            votes = _voter_outputs(outputs, i)
            if decision.settled:
                answers.append(
                    Answer(
                        decision.label,
                        decision.confidence,
                        decision.tier,
                        decision.reason,
                        None,
                        votes,
                        False,
                        0.0,
                        cheap_ms,
                    )
                )
                continue
            llm_output, cost, problem, llm_ms = llm_by_index[i]
            final = bundle.arbiter.final_pass(
                _one(first, decision), {decision.item_id: llm_output} if llm_output else {}
            )
            merged = final.decisions[0]
            if llm_output is not None:
                votes["llm"] = _voter_outputs([llm_output], 0)["llm"]
            called = self.asker is not None and bundle.llm is not None
            if merged.settled:
                answers.append(
                    Answer(
                        merged.label,
                        merged.confidence,
                        "llm",
                        merged.reason,
                        None,
                        votes,
                        called,
                        cost,
                        cheap_ms + llm_ms,
                    )
                )
            else:
                why = problem or merged.reason
                answers.append(
                    Answer(
                        ABSTAIN,
                        merged.confidence,
                        "abstain",
                        merged.reason,
                        why,
                        votes,
                        called,
                        cost,
                        cheap_ms + llm_ms,
                    )
                )
        return answers

    async def _ask_llm(self, text: str) -> tuple[Any, float, str | None, float]:
        """(one-row VoterOutput or None, cost, why there is no answer, milliseconds)."""
        from pipeline.ensemble.llm_voter import interpret_llm_answer

        llm = self.artifact.bundle.llm
        if llm is None or self.asker is None:
            return None, 0.0, "unsettled by the cheap tiers and the LLM tier is off", 0.0
        start = time.perf_counter()
        try:
            answer, cost = await asyncio.wait_for(self.asker(llm.messages(text), llm.params), self.llm_timeout_s)
        except TimeoutError:
            ms = (time.perf_counter() - start) * 1000
            return (
                None,
                0.0,
                f"unsettled by the cheap tiers; the LLM tier did not answer within {self.llm_timeout_s}s",
                ms,
            )
        except Exception as exc:  # noqa: BLE001 - any LLM failure abstains; the client already retried
            ms = (time.perf_counter() - start) * 1000
            return None, 0.0, f"unsettled by the cheap tiers; the LLM tier failed ({type(exc).__name__})", ms
        ms = (time.perf_counter() - start) * 1000
        labels = self.artifact.bundle.task.label_names
        return interpret_llm_answer(answer, labels, llm.min_confidence, "llm"), cost, None, ms


def _one(first: Any, decision: Any) -> Any:
    from pipeline.ensemble.arbiter import PassResult

    return PassResult(first.labels, (decision,), "first")


def _voter_outputs(outputs: Sequence[Any], i: int) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for out in outputs:
        label = out.predicted()[i]
        result[out.voter] = {
            "label": label,
            "confidence": round(float(out.proba[i].max()), 4),
            "explanation": out.explanations[i],
        }
    return result


def client_asker(client: Any, alias: str) -> LlmAsker:
    """An asker over `pipeline.llm.client.LLMClient` (store, cache, cost, budget, retries, fallbacks)."""

    async def ask(messages: list[dict[str, str]], params: dict[str, Any]) -> tuple[str, float]:
        spec = client.spec_for(alias, messages, **params, purpose="serve")
        result = await client.complete(spec)
        return str(result.text), float(result.cost_usd)

    return ask
