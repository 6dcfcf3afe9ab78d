"""The drafting core behind hvd's vLLM plugins (`vllm.py` for vLLM <= 0.33, `vllm_speculator.py`
for 0.34): per batch row the HVD method's choice, priced by what vLLM's own steps take.

vLLM verifies the drafts itself, so whatever is proposed its output is its own; the core only
decides what to propose. Arms, token-level (no GPU memory of their own):

- `hvd` (the default): Hybrid Verified Decoding as in hvd's own engine (hvd/hybrid/drafter.py) —
  the suffix cache arm (per request a suffix index over its prompt and output, one bounded
  store of earlier responses across requests), ADED's tri-gram chain as the model arm, the
  payoff predictor, online calibration, and per row the choice cache / model / no draft and
  the cut. Chains only: vLLM verifies one chain a row.
- `suffix`: the cache arm alone, its most frequent chain.

Under load (hvd/integrations/goodput.py): each arm's budget in a row is capped where that arm's
measured acceptance in the request no longer pays for the rows a draft adds to the batch (the
hybrid then chooses among the capped drafts), so an arm whose estimates were learnt on other
traffic cannot over-draft a busy batch.

Pricing. The core cannot time the target, only the calls: the seconds from the end of one
`step` to the start of the next are vLLM's step (one forward over every row, sampling,
scheduling). `BatchStepCost` (hvd/cost/batch.py) fits those seconds to the requests and the
rows the step verified (each drafted row's draft + 1), and each request's verify is charged its
share of the fixed part plus its own cost and its rows' marginal cost, which the hybrid's cost
calibration learns from. A step that also prefilled (a request joined, or a row is mid-way
through its prompt) measures the prefill too: it is not fitted, and its verifies are charged
the fitted step.
The verify-cost prior is flat-ish (a draft node a tenth of a plain step) and its scale is
learnt from the first steps: on a GPU a few nodes cost little, on a CPU more, and the
calibration finds which.

The predictor ships for the default model's vocabulary (SmolLM2); for another, `hvd` falls
back to the `suffix` arm with a note on stderr, as it does where ADED's tri-gram datastore is
not built: its corpus is hvd's data packages, which vLLM's environment does not hold, so it is
built once by hvd's own install (`hvd datastore build`; scripts/setup_vllm_cpu.sh and
`hvd agent-bench` do it) into the cache both read (HVD_CACHE).

With `HVD_VLLM_LOG=<file>` in the engine's environment each step appends one JSON line: the
seconds since the last step and whether it prefilled, the seconds this call took to draft, the
fitted step (fixed, per request, per row), a row's price `theta` (goodput.py), and per row its
budget, its draft's length, the arm that drafted it (`hvd` chooses: the suffix arm,
`aded-greedy`, or `ar` for no draft; none where the row had no budget) and each asked arm's cap.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from hvd.cost.batch import BatchStepCost, StepLine
from hvd.cost.curve import SIZES, VerifyCost
from hvd.drafters.base import DecodeContext, Drafter, LearnsCost
from hvd.errors import ModelError
from hvd.integrations.goodput import RowRecord, cap, price
from hvd.types import Draft

METHODS = ("hvd", "suffix")
PRIOR_STEP = 0.02  # seconds of a plain step in the prior curve (its scale is learnt at once)
PRIOR_NODE = 0.1  # a draft node's share of a plain step in the prior curve


@dataclass(frozen=True)
class CoreConfig:
    method: str = "hvd"
    max_draft: int = 16  # vLLM's num_speculative_tokens
    # the engine verifies `max_draft` slots a row whatever is drafted (vLLM 0.34 without
    # adaptive verification): a step's rows do not depend on the drafts
    full_width: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown hvd method {self.method!r} for vLLM; choose from: {', '.join(METHODS)}")
        if self.max_draft < 1:
            raise ValueError(f"num_speculative_tokens must be at least 1, not {self.max_draft}")


@dataclass
class Row:
    """One batch row this step: its request's drafter and what the row holds."""

    drafter: Drafter  # the request's own (`SpeculationCore.start`)
    tokens: list[int]  # prompt + committed output (the core reads, never writes it)
    prompt_len: int
    new: Sequence[int]  # tokens committed since the drafter last saw the row
    budget: int  # most draft tokens this row may take (0: none)


@dataclass(frozen=True)
class CoreStats:
    """What the core has proposed so far."""

    steps: int
    rows: int  # rows asked for a draft
    drafted: int  # rows given a non-empty draft
    draft_tokens: int
    step: StepLine  # the fitted step


@dataclass
class _Verify:
    drafter: Drafter
    nodes: int
    context: int


@dataclass
class _Counts:
    steps: int = 0
    rows: int = 0
    drafted: int = 0
    draft_tokens: int = 0
    pending: list = field(default_factory=list)


def prior_curve() -> VerifyCost:
    """What a verify is taken to cost before any step is measured."""
    return VerifyCost(SIZES, tuple(PRIOR_STEP * (1.0 + PRIOR_NODE * n) for n in SIZES))


def build_drafter(method: str, vocab_size: int) -> Drafter:
    """The shared drafter of `method` for a model of `vocab_size` tokens (forked per request)."""
    from hvd.drafters.suffix import SuffixDrafter

    cache = SuffixDrafter()
    if method == "suffix":
        return cache
    from hvd.drafters import trigram_store
    from hvd.drafters.aded import AdedConfig, AdedDrafter
    from hvd.hybrid import predictor as pred
    from hvd.hybrid.calibration import OnlineConfig, OnlineState
    from hvd.hybrid.drafter import HybridDrafter
    from hvd.hybrid.policy import PolicyConfig

    try:
        predictor = pred.load(None)
    except pred.PredictorError as e:
        print(f"hvd: note: the suffix arm alone: {e}", file=sys.stderr)
        return cache
    if predictor.classes.shape[0] < vocab_size:
        print(f"hvd: note: the suffix arm alone: the HVD predictor fits a {predictor.classes.shape[0]}-token "
              f"vocabulary, this model has {vocab_size}", file=sys.stderr)
        return cache
    try:
        table = trigram_store.table_for(vocab_size, None)
    except ModelError as e:  # its corpus is hvd's data packages, which vLLM's environment does not hold
        print(f"hvd: note: the suffix arm alone: {e}; build it once with `hvd datastore build` where hvd's data is "
              "installed, into the same HVD_CACHE", file=sys.stderr)
        return cache
    curve = prior_curve()
    online = OnlineState(OnlineConfig(), curve)
    model = AdedDrafter(AdedConfig(greedy=True), table, "aded-greedy", curve).load()
    model.share_cost(online.cost)
    policy = PolicyConfig(rule="cost", allow_both=False)  # one chain a row
    return HybridDrafter("hvd", cache, model, policy, predictor, curve, online=online)


class SpeculationCore:
    """Drafts for vLLM's batch rows (see the module docstring). One per vLLM worker."""

    def __init__(self, config: CoreConfig, vocab_size: int, clock: Callable[[], float] = time.perf_counter,
                 drafter: Optional[Drafter] = None) -> None:
        """`drafter`: the shared drafter to fork per request (None: `build_drafter`)."""
        self.config, self.clock, self.vocab_size = config, clock, vocab_size
        self.drafter = drafter if drafter is not None else build_drafter(config.method, vocab_size)
        self.batch = BatchStepCost()
        self._learns_cost = isinstance(self.drafter, LearnsCost)  # its forks learn each verify's charge
        self._counts = _Counts()
        self._ended_at: Optional[float] = None
        self._records: dict[int, RowRecord] = {}  # by id of a request's drafter: its drafts' acceptance
        self._verified = (0, 0)  # the last step's rows to verify, and its requests
        log = os.environ.get("HVD_VLLM_LOG")
        self._log = open(log, "a", buffering=1) if log else None

    def warm_up(self) -> None:
        """Runs a made-up request through a spare drafter built like this core's (`build_drafter`),
        so that compiling the arms' kernels and loading their tables (seconds on a fresh install)
        happens when vLLM loads the model, not in a user's first request. Nothing this core has
        learnt or stores is touched."""
        spare = build_drafter(self.config.method, self.vocab_size).for_request()
        text = [t % self.vocab_size for t in range(1, 33)] * 4
        spare.begin(text[:64])
        for n in range(64, len(text)):
            spare.observe(text[n:n + 1])
            draft = spare.propose(DecodeContext(text[:n + 1], 64, min(self.config.max_draft, 8), None))
            if len(draft.tokens) and isinstance(spare, LearnsCost):
                spare.verified(len(draft.tokens), PRIOR_STEP, n + 1)

    def start(self, prompt: Sequence[int]) -> Drafter:
        """A new request's drafter, having read its prompt."""
        fork = self.drafter.for_request()
        fork.begin(prompt)
        return fork

    def finish(self, drafter: Drafter, output: Sequence[int]) -> None:
        """A request is over: its output enters the cross-request store."""
        self._records.pop(id(drafter), None)
        drafter.end(output)

    def step(self, rows: Sequence[Row], prefilled: bool) -> list[list[int]]:
        """One draft (token ids, possibly none) per row. `prefilled`: the step that just ran
        also prefilled (its seconds are not a verify's)."""
        started = self.clock()
        waited = None if self._ended_at is None else started - self._ended_at
        if waited is not None:
            self._charge(waited, prefilled)
        theta = 0.0 if self.config.full_width else price(self.batch.line(), len(rows))
        c = self._counts
        out: list[list[int]] = []
        arms: list[tuple[Optional[str], dict[str, int]]] = []
        for row in rows:
            record = self._records.setdefault(id(row.drafter), RowRecord())
            if row.new:
                row.drafter.observe(row.new)
                record.saw(row.new)
            chain: list[int] = []
            arm = None
            caps: dict[str, int] = {}
            if row.budget > 0:
                def arm_budget(name: str, record: RowRecord = record, budget: int = row.budget,
                               caps: dict[str, int] = caps) -> int:
                    """What `name`'s measured acceptance in this request says pays."""
                    caps[name] = cap(record.rates(name), theta, budget)
                    return caps[name]

                draft = row.drafter.propose(DecodeContext(row.tokens, row.prompt_len, row.budget, None,
                                                          arm_budget=arm_budget))
                arm = draft.source or row.drafter.name
                # a drafter of one arm may not read arm_budget: its chain is cut here
                chain = main_chain(draft, arm_budget(arm) if len(draft) else 0)
                c.pending.append(_Verify(row.drafter, len(chain), len(row.tokens)))
            record.drafted(arm, chain)
            arms.append((arm, caps))
            c.rows += 1
            c.drafted += bool(chain)
            c.draft_tokens += len(chain)
            out.append(chain)
        c.steps += 1
        self._verified = (sum(self._width(len(d)) for d in out), len(out))
        if self._log is not None:
            self._log.write(json.dumps({
                "seconds": waited, "drafting": self.clock() - started, "prefilled": prefilled,
                "line": dataclasses.astuple(self.batch.line()), "theta": theta,
                "rows": [[r.budget, len(d), a, caps] for r, d, (a, caps) in zip(rows, out, arms)]}) + "\n")
        self._ended_at = self.clock()
        return out

    def stats(self) -> CoreStats:
        c = self._counts
        return CoreStats(c.steps, c.rows, c.drafted, c.draft_tokens, self.batch.line())

    def _width(self, nodes: int) -> int:
        """The rows vLLM verifies for a row given `nodes` draft tokens."""
        return self.config.max_draft + 1 if self.config.full_width else nodes + 1

    def _charge(self, seconds: float, prefilled: bool) -> None:
        """The step line learns the last step (every row, drafted or not); its verifies learn what
        they cost (`LearnsCost`)."""
        pending, self._counts.pending = self._counts.pending, []
        (rows, batch), self._verified = self._verified, (0, 0)
        if not batch:
            return
        if not prefilled:
            self.batch.add(rows, seconds, batch)
        elif self.batch.w == 0:
            return  # nothing fitted yet: the drafters keep their own clock for this step
        if self._learns_cost:
            for v in pending:
                v.drafter.verified(v.nodes, self.batch.charge(self._width(v.nodes), batch), v.context)


def main_chain(draft: Draft, k: int) -> list[int]:
    """The draft's first path from the root (at each depth its first child listed), at most k tokens."""
    out, at = [], -1
    while len(out) < k:
        nxt = next((i for i in range(at + 1, len(draft.tokens)) if draft.parents[i] == at), None)
        if nxt is None:
            break
        out.append(int(draft.tokens[nxt]))
        at = nxt
    return out


def read_options(options: Optional[dict[str, Any]], max_draft: int) -> CoreConfig:
    """The core's config from a vLLM speculative config's options (`{"method": "hvd"}`)."""
    options = dict(options or {})
    method = options.pop("method", "hvd")
    if options:
        raise ValueError(f"unknown hvd option(s) {', '.join(sorted(options))}; the one option is 'method'")
    return CoreConfig(str(method), int(max_draft))
