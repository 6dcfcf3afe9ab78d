"""Hybrid Verified Decoding (`hvd`, `hvd-threshold`, `rule-hybrid`), after arXiv 2606.01019.

Every step the cache drafter (suffix trees) proposes first, which costs microseconds. Before
spending a verification on that draft, the predictor estimates how many of its tokens the
target will accept; the policy then verifies the cache draft, drafts with the model arm
instead, or merges both into one tree (`hvd/hybrid/policy.py`). The model arm drafts only
when chosen. Both arms observe every committed token, so each stays in sync with the text.
Each draft's `source` names the arm(s) that proposed it: the per-step decisions land in the
generation stats.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from hvd.drafters.base import Capabilities, DecodeContext, Drafter
from hvd.hybrid.cost import VerifyCost
from hvd.hybrid.features import StepHistory, feature_vector
from hvd.hybrid.policy import BOTH, CACHE, MODEL, NONE, ArmEstimate, Decision, PolicyConfig, choose
from hvd.hybrid.predictor import Predictor
from hvd.types import Draft


class HybridDrafter:
    def __init__(self, name: str, cache: Drafter, model: Drafter, policy: PolicyConfig,
                 predictor: Optional[Predictor] = None, cost: Optional[VerifyCost] = None,
                 classes: Optional[np.ndarray] = None) -> None:
        self.name = name
        self.cache, self.model, self.policy = cache, model, policy
        self.predictor, self.cost = predictor, cost
        self.classes = predictor.classes if predictor is not None else classes  # (vocab, classes)
        if self.classes is not None:
            self.classes = self.classes.view()
            self.classes.flags.writeable = False  # load-time data every request reads
        self.log: Optional[list] = None  # when a list: (position, features, cache draft) per step (`hvd trace`)
        a, b = cache.capabilities, model.capabilities
        self.capabilities = Capabilities(
            needs_hidden_states=tuple(sorted(set(a.needs_hidden_states) | set(b.needs_hidden_states))),
            returns_probs=a.returns_probs or b.returns_probs, tree=True)
        self.model_arm = ArmEstimate()  # the model arm's running yield and time, shared across requests
        self._history = StepHistory()
        self._prompt_len = 0
        self._pending: Optional[tuple[str, Draft, Optional[Draft], float]] = None  # arm, cache, model, model secs
        self._since_model = 0  # decisions since the model arm last drafted

    def for_request(self) -> "HybridDrafter":
        """A hybrid for one request: its arms' own per-request drafters and its own acceptance
        history; the predictor, cost curve, the model arm's running estimate and the trace log
        shared with this one."""
        fork = HybridDrafter(self.name, self.cache.for_request(), self.model.for_request(), self.policy,
                             self.predictor, self.cost, self.classes)
        fork.model_arm, fork.log = self.model_arm, self.log
        return fork

    def begin(self, prompt: Sequence[int]) -> None:
        self.cache.begin(prompt)
        self.model.begin(prompt)
        self._history = StepHistory()
        self._prompt_len = len(prompt)
        self._pending = None
        self._since_model = 0

    def propose(self, ctx: DecodeContext) -> Draft:
        t0 = time.perf_counter()
        cdraft = self.cache.propose(ctx).truncate(ctx.max_draft)
        t1 = time.perf_counter()
        decision = self._decide(cdraft, ctx, cache_seconds=t1 - t0)
        t2 = time.perf_counter()
        if decision.cache_depth:
            cdraft = cdraft.truncate(decision.cache_depth)
        mdraft = None
        if decision.arm in (MODEL, BOTH):
            mdraft = self.model.propose(ctx).truncate(ctx.max_draft)
            self._since_model = 0
        else:
            self._since_model += 1
        self._pending = (decision.arm, cdraft, mdraft, time.perf_counter() - t2)
        if decision.arm == NONE:
            return Draft((), (), source="ar")
        if decision.arm == CACHE:
            return replace(cdraft, source=self.cache.name)
        if decision.arm == MODEL or not len(cdraft):
            return replace(mdraft, source=self.model.name)
        return replace(cdraft.union(mdraft), source=f"{self.cache.name}+{self.model.name}")

    def _decide(self, cdraft: Draft, ctx: DecodeContext, cache_seconds: float) -> Decision:
        predicted = 0.0
        if len(cdraft) and (self.predictor is not None or self.log is not None):
            x = feature_vector(cdraft, self._prompt_len, ctx.generated, self._history, self.classes)
            if self.predictor is not None:
                predicted = float(self.predictor.predict(x))
            if self.log is not None:
                self.log.append((ctx.generated, x, cdraft))
        score = cdraft.features.get("score", 0.0)
        return choose(self.policy, predicted, score, cdraft.max_depth(), cache_seconds, self.model_arm,
                      self.cost, self._since_model)

    def observe(self, committed: Sequence[int]) -> None:
        self.cache.observe(committed)
        self.model.observe(committed)
        if self._pending is None:
            return
        arm, cdraft, mdraft, model_seconds = self._pending
        self._pending = None
        accepted = max(len(committed) - 1, 0)
        self._history.record(arm in (CACHE, BOTH), accepted)
        if mdraft is not None:
            got = accepted if arm == MODEL else mdraft.matched(committed)
            self.model_arm.update(got, model_seconds, len(mdraft), self.policy.ema)

    def end(self, output: Sequence[int]) -> None:
        self.cache.end(output)
        self.model.end(output)


CACHE_ARM = "suffix"
MODEL_ARM = "aded-greedy"  # a cheap chain: on this CPU big trees cost more than they add (docs/BENCHMARKS.md)


def build(target, name: str, policy: PolicyConfig, model_arm: str = MODEL_ARM,
          predictor_dir=None, stores=None) -> HybridDrafter:
    """A hybrid over registered drafters for `target` (reading and feeding the engine's
    shared `stores` when given): loads the predictor (rules that need it) and the machine's
    verify-cost curve (the cost rule; measured once, then cached)."""
    from hvd.drafters import registry
    from hvd.hybrid import cost as cost_curve
    from hvd.hybrid import predictor as pred
    from hvd.models import cache_dir

    cache = registry.get(CACHE_ARM).make(target, stores)
    model = registry.get(model_arm).make(target, stores)
    predictor = pred.load(predictor_dir) if policy.rule != "rule" else None
    if predictor is not None and predictor.classes.shape[0] < target.vocab_size:
        raise pred.PredictorError(
            f"the HVD predictor was trained for a {predictor.classes.shape[0]}-token vocabulary, this model has "
            f"{target.vocab_size}; train one for it with `hvd trace` and `hvd train predictor`")
    cost = cost_curve.cached(target, cache_dir()) if policy.rule == "cost" else None
    return HybridDrafter(name, cache, model, policy, predictor, cost)
