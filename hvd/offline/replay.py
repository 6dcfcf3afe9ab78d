"""Replay: a drafter's greedy acceptance against a recorded `ar` output, without the target.

In greedy decoding the target's output is fixed: it is `ar`'s output, the *reference*. So
what a drafter would get accepted at every step follows from the reference alone: the
accepted path is the path `verify_greedy` would take through the draft (from the root, the
first child whose token is the reference's next token, as deep as that goes), the bonus is
the reference token after it. `replay` runs the drafter through exactly the lifecycle of
`Engine._decode` (``begin(prompt)``, ``observe([first])``, then per step ``propose`` →
``truncate(budget)`` → ``observe(committed)``, and ``end(output)``), with the same
per-step budget, so its accepted lengths and τ equal a real greedy run's, step for step
(tests/bench/test_replay.py checks this against the engine).

Each step yields a `StepRecord`: the draft's features, its size, the accepted length and
where in the output it happened. The hybrid predictor (HVD) trains on these traces.
Speed cannot be measured here: only drafting is timed, the target never runs.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from hvd.drafters.base import DecodeContext, Drafter
from hvd.types import NO_FEATURES, Draft, DraftFeatures


@dataclass(frozen=True)
class StepRecord:
    """One replayed verification step (the terms are those of hvd/types.py)."""

    position: int  # output tokens committed before this step (≥ 1: the first comes from prefill)
    prompt_len: int  # tokens in the prompt
    budget: int  # max_draft the drafter was given (the engine's remaining-token budget)
    draft_len: int  # nodes in the draft tree after truncation to the budget
    draft_depth: int  # deepest node of that tree (= draft_len for a chain)
    accepted: int  # draft tokens the target accepts within the reference (bonus not counted)
    committed: int  # tokens committed this step: accepted + 1, cut where the reference ends
    draft_seconds: float  # propose + truncate, timed like the engine's draft time
    features: DraftFeatures = NO_FEATURES  # Draft.features as proposed
    source: Optional[str] = None  # Draft.source: which drafter proposed, for combined methods

    def to_dict(self) -> dict:
        return {**asdict(self), "features": self.features.to_dict()}

    @staticmethod
    def from_dict(d: dict) -> "StepRecord":
        return StepRecord(**{**d, "features": DraftFeatures.from_dict(d.get("features") or {})})


def replay(
    drafter: Optional[Drafter],
    prompt_ids: Sequence[int],
    reference: Sequence[int],
    max_draft: Optional[int] = None,
    limit: Optional[int] = None,
) -> list[StepRecord]:
    """Replay `drafter` over the greedy output `reference` of `prompt_ids`; one record a step.

    `drafter` None replays `ar` (empty drafts: one token a step).
    `limit` is the generation's new-token limit (max_new_tokens, capped by the context
    window), from which the engine derives each step's budget (limit - generated - 1).
    Default: len(reference), exact when the reference stopped at the length limit; when it
    stopped at EOS the step count and accepted tokens are still the engine's, but pass the
    real limit so the drafter sees the same budgets. `max_draft` additionally caps every
    step's budget (None: no cap, as in the engine).
    """
    reference = [int(t) for t in reference]
    prompt = [int(t) for t in prompt_ids]
    limit = len(reference) if limit is None else limit
    if not reference:
        raise ValueError("reference is empty: nothing to replay")
    if limit < len(reference):
        raise ValueError(f"limit {limit} is below the reference length {len(reference)}")
    records: list[StepRecord] = []
    seq = prompt + reference[:1]
    out = 1
    if drafter is not None and out < len(reference):  # begun only when the first token did not end it
        drafter.begin(prompt)
        drafter.observe(reference[:1])
    while out < len(reference):
        budget = limit - out - 1
        if max_draft is not None:
            budget = min(budget, max_draft)
        t0 = time.perf_counter()
        draft = Draft.empty()
        if drafter is not None and budget > 0:
            draft = drafter.propose(DecodeContext(seq, len(prompt), budget)).truncate(budget)
        seconds = time.perf_counter() - t0
        path = draft.accepted_path(reference[out:])
        committed = reference[out : out + len(path) + 1]  # accepted + bonus, cut at the end
        records.append(StepRecord(out, len(prompt), budget, len(draft), draft.max_depth(), len(path),
                                  len(committed), seconds, draft.features, draft.source))
        seq.extend(committed)
        out += len(committed)
        if drafter is not None:
            drafter.observe(committed)
    if drafter is not None:
        drafter.end(reference)
    return records


def tau(records: Sequence[StepRecord]) -> float:
    """τ of one replayed generation: tokens after the first ÷ steps (1.0 with no steps)."""
    return sum(r.committed for r in records) / len(records) if records else 1.0
