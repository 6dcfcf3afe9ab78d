"""Hybrid Verified Decoding (`hvd`, `hvd-threshold`, `rule-hybrid`), after arXiv 2606.01019.

Every step the cache drafter (suffix trees) proposes first, which costs little beside a
verify. Before spending a verification on that draft, the predictor estimates how many of its
tokens the target will accept; the policy then verifies the cache draft, drafts with the
model arm instead, or merges both into one tree (`hvd/hybrid/policy.py`). The model arm drafts
only when chosen. Both arms observe every committed token, so each stays in sync with the text.
Each draft's `source` names the arm(s) that proposed it: the per-step decisions land in the
generation stats.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence, Union

import numpy as np

from hvd.drafters.base import Capabilities, DecodeContext, Drafter, SharesCost
from hvd.hybrid.calibration import (CACHE_ONLY, MODEL_ONLY, MODEL_PRIOR, POLICY, FollowedDrafts, OnlineConfig,
                                   OnlineState)
from hvd.cost.curve import VerifyCost
from hvd.hybrid.features import StepHistory, feature_vector
from hvd.hybrid.policy import BOTH, CACHE, MODEL, NONE, ArmEstimate, Decision, PolicyConfig, choose, geometric
from hvd.hybrid.predictor import Predictor
from hvd.types import Draft, OnlineSnapshot


@dataclass
class _Pending:
    """A proposed step, waiting for what verification commits."""

    mode: str
    arm: str
    cache: Draft  # the whole cache draft, before any cut: what the acceptance curve learns from
    model: Optional[Draft]
    model_seconds: float
    predicted: Optional[float]  # the predictor's raw output for the cache draft (None: none)
    draft_seconds: float  # the whole proposal
    nodes: int  # draft nodes sent to verification
    context: int  # tokens before the draft
    proposed_at: float


class HybridDrafter:
    def __init__(self, name: str, cache: Drafter, model: Drafter, policy: PolicyConfig,
                 predictor: Optional[Predictor] = None, cost: Optional[VerifyCost] = None,
                 classes: Optional[np.ndarray] = None, online: Optional[OnlineState] = None,
                 clock: Union[str, Callable[[int, int], float]] = "wall") -> None:
        """`online`: calibration and fallback learnt while serving (hvd/hybrid/calibration.py),
        shared by this drafter's requests; None: the policy as trained. `clock`: "wall" times
        verification between `propose` and `observe`; "model" charges the (calibrated) cost
        curve instead (replays, where no target runs); a function of (draft nodes, context)
        gives each verify's seconds (a simulated machine, which the calibration learns from)."""
        self.name = name
        self.online, self.clock = online, clock
        self._modes = online.request_bandit() if online is not None else None  # per request (`begin`)
        self.cache, self.model, self.policy = cache, model, policy
        self.predictor, self.cost = predictor, cost
        self.classes = classes if classes is not None else (predictor.classes if predictor is not None else None)  # (vocab, classes)
        if self.classes is not None:
            self.classes = self.classes.view()
            self.classes.flags.writeable = False  # load-time data every request reads
        self.log: Optional[list] = None  # when a list: (position, features, cache draft) per step (`hvd trace`)
        a, b = cache.capabilities, model.capabilities
        self.capabilities = Capabilities(
            needs_hidden_states=tuple(sorted(set(a.needs_hidden_states) | set(b.needs_hidden_states))),
            drafts_on_target=a.drafts_on_target or b.drafts_on_target)
        # the model arm's running yield and time: the method's (online) or shared with this drafter's requests
        self.model_arm = online.model_arm if online is not None else ArmEstimate()
        self._history = StepHistory()
        self._prompt_len = 0
        self._pending: Optional[_Pending] = None
        self._since_model = 0  # decisions since the model arm last drafted
        self._observed_at: Optional[float] = None  # when the last commit reached `observe`
        self._followed: Optional[FollowedDrafts] = None  # this request's cache drafts still compared

    def for_request(self) -> "HybridDrafter":
        """A hybrid for one request: its arms' own per-request drafters and its own acceptance
        history; the predictor, cost curve, the model arm's running estimate and the trace log
        shared with this one."""
        fork = HybridDrafter(self.name, self.cache.for_request(), self.model.for_request(), self.policy,
                             self.predictor, self.cost, self.classes, self.online, self.clock)
        fork.model_arm, fork.log = self.model_arm, self.log
        return fork

    def begin(self, prompt: Sequence[int]) -> None:
        self.cache.begin(prompt)
        self.model.begin(prompt)
        self._history = StepHistory()
        if self.online is not None:
            self._modes = self.online.request_bandit()
        self._prompt_len = len(prompt)
        self._pending = None
        self._since_model = 0
        self._observed_at = None
        self._charged: Optional[float] = None  # the decode loop's seconds for the last verify (`verified`)
        if self.online is not None and self.online.cfg.follow:
            self._followed = FollowedDrafts(self.online.acceptance)

    def propose(self, ctx: DecodeContext) -> Draft:
        t0 = time.perf_counter()
        if self._observed_at is not None:  # the last step's time after its verify (wall clock only)
            self.online.note_overhead(t0 - self._observed_at)
            self._observed_at = None
        mode = self._modes.pick() if self._modes is not None else POLICY
        model_budget = _budget(self.model, ctx)
        cdraft = _propose(self.cache, ctx, _budget(self.cache, ctx))
        if ctx.cut is not None:  # under a grammar: what is predicted, priced and learnt from is what can be verified
            cdraft = ctx.cut(cdraft)
        predicted = self._predict(cdraft, ctx)  # every step's: the acceptance curve learns from all
        mdraft, model_seconds = None, 0.0
        if mode == MODEL_ONLY or mode == POLICY and self.online is not None:  # online: drafted before deciding
            mdraft, model_seconds = self._model_draft(ctx, model_budget)
        if mode == CACHE_ONLY:
            decision = Decision(CACHE)
        elif mode == MODEL_ONLY:
            decision = Decision(MODEL)
        else:
            decision = self._decide(cdraft, predicted, self._fixed_seconds(t0, model_seconds), mdraft, len(ctx.tokens))
        if decision.arm in (MODEL, BOTH) and mdraft is None:
            mdraft, model_seconds = self._model_draft(ctx, model_budget)
        if mdraft is None and mode == POLICY:  # the policy's own decisions: its exploration schedule
            self._since_model += 1
        whole = cdraft
        if decision.cache_depth:
            cdraft = cdraft.truncate(decision.cache_depth)
        if decision.arm == NONE or decision.arm == CACHE and not len(cdraft):
            draft = Draft((), (), source="ar")
        elif decision.arm == CACHE:
            draft = replace(cdraft, source=self.cache.name)
        elif decision.arm == MODEL or not len(cdraft):
            draft = replace(mdraft.truncate(decision.model_depth or len(mdraft)), source=self.model.name)
        else:
            draft = replace(cdraft.union(mdraft.truncate(decision.model_depth or len(mdraft))),
                            source=f"{self.cache.name}+{self.model.name}")
        if model_budget <= 0:
            mdraft = None  # not asked: nothing to learn of the model arm
        self._pending = _Pending(mode, decision.arm, whole, mdraft, model_seconds, predicted, time.perf_counter() - t0,
                                 min(len(draft), ctx.max_draft), len(ctx.tokens), time.perf_counter())
        return draft

    def _fixed_seconds(self, t0: float, model_seconds: float) -> float:
        """What this step costs whatever it verifies. Online: all of it — drafting so far, the
        model arm's draft included, and the learnt time a step spends outside drafting and
        verifying — since every step pays it again, and leaving it out favours short drafts.
        Without online state, the cache arm's drafting only (the model arm priced separately)."""
        if self.online is None:
            return time.perf_counter() - t0 - model_seconds
        return time.perf_counter() - t0 + self.online.step_overhead

    def _model_draft(self, ctx: DecodeContext, budget: int) -> tuple[Draft, float]:
        """The model arm's draft within `budget` (whole: the policy cuts it) and the seconds it took."""
        t = time.perf_counter()
        mdraft = _propose(self.model, ctx, budget)
        if ctx.cut is not None:
            mdraft = ctx.cut(mdraft)
        self._since_model = 0
        return mdraft, time.perf_counter() - t

    def _predict(self, cdraft: Draft, ctx: DecodeContext) -> Optional[float]:
        """The predictor's output for the cache draft, within 0 .. its depth (None: no draft or
        no predictor); logs the step's features for `hvd trace`."""
        if not len(cdraft) or (self.predictor is None and self.log is None):
            return None
        x = feature_vector(cdraft, self._prompt_len, ctx.generated, self._history, self.classes)
        if self.log is not None:
            self.log.append((ctx.generated, x, cdraft))
        if self.predictor is None:
            return None
        return min(max(self.predictor.predict_one(x), 0.0), float(cdraft.max_depth()))  # no more than it holds

    def _decide(self, cdraft: Draft, predicted: Optional[float], cache_seconds: float,
                mdraft: Optional[Draft], context: int) -> Decision:
        """The policy's decision: the cache draft's chance of acceptance at each depth from the
        online curve (geometric in the prediction without online calibration), and the model
        draft's, when made before deciding, from its own curve; verification priced at this
        context length."""
        score = cdraft.features.score
        estimate, depth = predicted or 0.0, cdraft.max_depth()
        model_survival, curve = None, self.cost
        if self.online is None:
            survival = geometric(estimate, depth)
        else:
            survival = self.online.acceptance.survival(estimate, depth)
            curve = self.online.cost if self.online.cost is not None else curve
        cost = curve.at(context) if curve is not None else None
        if mdraft is not None:
            model_survival = self.online.model_acceptance.survival(_model_prediction(mdraft), mdraft.max_depth())
        return choose(self.policy, estimate, score, survival, cache_seconds, self.model_arm, cost, self._since_model,
                      model_survival)

    def verified(self, nodes: int, seconds: float, context: int) -> None:
        """The seconds the decode loop charges this step's verify (in a batch, this request's
        share of the step: hvd/scheduler.py); learnt instead of the wall time since `propose`."""
        self._charged = seconds

    def observe(self, committed: Sequence[int]) -> None:
        now = time.perf_counter()
        if self.online is not None and self.clock == "wall":
            self._observed_at = now
        self.cache.observe(committed)
        self.model.observe(committed)
        p, self._pending = self._pending, None
        if p is None:
            return
        accepted = max(len(committed) - 1, 0)
        self._history.record(p.arm in (CACHE, BOTH), accepted)
        if p.model is not None:
            got = p.model.matched(committed)  # of the whole draft, however it was cut
            self.model_arm.update(got, p.model_seconds, len(p.model), self.policy.ema)
            if self.online is not None:  # verified or not: censored where the commit ends
                self.online.model_acceptance.update(_model_prediction(p.model), p.model.max_depth(), got,
                                                    len(committed))
        charged, self._charged = self._charged, None
        if self.online is not None:
            self._learn(p, committed, now - p.proposed_at if charged is None else charged)

    def _learn(self, p: _Pending, committed: Sequence[int], waited: float) -> None:
        """Feed the online state with this step's outcome (`waited`: seconds since `propose`, or
        what the decode loop charged the verify)."""
        online = self.online
        if self._followed is not None:
            self._followed.extend(committed)  # earlier steps' drafts see these tokens too
        if p.predicted is not None and len(p.cache):  # verified or not, cut or not
            if self._followed is not None:
                self._followed.add(p.predicted, p.cache, committed)
            else:  # censored where this step's commit ends
                online.acceptance.learn(p.predicted, p.cache, committed)
        if self.clock == "model":
            verify = online.cost.at(p.context)(p.nodes) if online.cost is not None else 0.0
        else:
            verify = waited if self.clock == "wall" else self.clock(p.nodes, p.context)
            if online.cost is not None:
                online.cost.update(p.nodes, verify, p.context)
        self._modes.update(p.mode, len(committed), p.draft_seconds + verify)

    def online_state(self) -> Optional[OnlineSnapshot]:
        """What the online calibration has learnt so far (None without it)."""
        return None if self.online is None else self.online.snapshot(self._modes.snapshot())

    def end(self, output: Sequence[int]) -> None:
        self.cache.end(output)
        self.model.end(output)
        if self._followed is not None:
            self._followed.close()


def _budget(arm: Drafter, ctx: DecodeContext) -> int:
    """The most tokens `arm` may draft this step: the step's budget and the arm's own
    (`DecodeContext.arm_budget`)."""
    return ctx.max_draft if ctx.arm_budget is None else min(ctx.max_draft, ctx.arm_budget(arm.name))


def _propose(arm: Drafter, ctx: DecodeContext, budget: int) -> Draft:
    """`arm`'s draft within `budget` (`_budget`): an arm given none is not asked (an empty draft)."""
    if budget <= 0:
        return Draft((), ())
    return arm.propose(ctx if budget == ctx.max_draft else replace(ctx, max_draft=budget)).truncate(budget)


def _model_prediction(mdraft: Draft) -> float:
    """What the model arm's drafter expects of its draft (its own calibrated estimate of the
    accepted length), the bin of its curve; MODEL_PRIOR for a drafter that gives none."""
    expected = mdraft.features.expected_accepted
    return MODEL_PRIOR if expected is None else expected


def build(target, name: str, policy: PolicyConfig, cache: Drafter, model: Drafter, predictor_dir=None,
          stores=None) -> HybridDrafter:
    """A hybrid of the arms `cache` and `model` for `target` (reading and feeding the engine's
    shared `stores` when given): loads the predictor (rules that need it) and the machine's
    verify-cost curve (the cost rule; measured once, then cached)."""
    from hvd.hybrid import predictor as pred
    from hvd.machine import cache_dir
    from hvd.targets import verify_cost as cost_curve

    if policy.allow_both is None:  # see PolicyConfig.allow_both
        policy = replace(policy, allow_both=target.precision != "int8")
    assets = None if stores is None else stores.assets
    if predictor_dir is None and assets is not None:
        predictor_dir = assets.own_predictor()  # None: the shipped one
    predictor = pred.load(predictor_dir) if policy.rule != "rule" else None
    classes = stores.classes if stores is not None and stores.classes is not None else None
    if predictor is not None and classes is None:
        classes = predictor.classes
    if classes is not None and classes.shape[0] < target.vocab_size:
        raise pred.PredictorError(
            f"no token classes for this model's {target.vocab_size}-token vocabulary (the predictor's are for "
            f"{classes.shape[0]}); load it through Engine.load or run `hvd prepare`")
    cost = cost_curve.cached(target, cache_dir()) if policy.rule == "cost" else None
    online = None
    if policy.rule == "cost" and policy.online:
        known = stores.calibration if stores is not None else {}
        online = known.setdefault(name, OnlineState(OnlineConfig(), cost))  # one per method, across requests
        if online.cost is not None and isinstance(model, SharesCost):
            model.share_cost(online.cost)  # the model arm sizes its drafts by what this hybrid's verifies measure
    return HybridDrafter(name, cache, model, policy, predictor, cost, classes=classes, online=online)
