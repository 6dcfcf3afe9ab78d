"""Online calibration: a deliberately mis-calibrated predictor still ends within 5% of the best
single arm's tokens per verify cost on a replayed trace, and the calibrators learn what they see."""
import inspect
import json
import random

import numpy as np
import pytest

from hvd.offline.replay import replay
from hvd.drafters.aded import AdedConfig, AdedDrafter
from hvd.hybrid.drafter import HybridDrafter
from hvd.drafters.suffix import SuffixDrafter
from hvd.hybrid import predictor as pred
from hvd.hybrid.calibration import MODES, AcceptanceCurve, ModeBandit, OnlineConfig, OnlineState, prior_hazard
from hvd.cost.curve import VerifyCost
from hvd.hybrid.policy import PolicyConfig, capped_mean, geometric

# A CPU-like verify cost: every draft node costs a third of a one-token step.
COST = VerifyCost((0, 1, 8, 16, 32, 64), tuple(0.025 * (1 + n / 3) for n in (0, 1, 8, 16, 32, 64)))


class Scaled:
    """The shipped predictor with its outputs multiplied by `factor`."""

    def __init__(self, inner, factor: float) -> None:
        self.inner, self.factor, self.classes = inner, factor, inner.classes

    def predict(self, x):
        return self.inner.predict(x) * self.factor

    def predict_one(self, x):
        return self.inner.predict_one(x) * self.factor


def ids(text: str) -> list[int]:
    return [1 + ord(c) % 250 for c in text]


def trace() -> tuple[list[int], list[int]]:
    """An agent's edit: a real source file as the prompt; the reply copies it with a rename,
    then goes on with text of another file (nothing to copy)."""
    src = inspect.getsource(json.decoder)[:3000]
    other = inspect.getsource(random)[:1500]
    return ids(src), ids(src[:2500].replace("scanstring", "scan_string") + other)


def per_cost(records) -> float:
    """Committed tokens per second of verification under COST."""
    return sum(r.committed for r in records) / sum(COST(r.draft_len) for r in records)


def hybrid(factor: float, online: bool) -> HybridDrafter:
    model = AdedDrafter(AdedConfig(greedy=True, size_by_cost=False), name="aded-greedy")
    state = OnlineState(OnlineConfig(), COST) if online else None
    return HybridDrafter("hvd", SuffixDrafter(), model, PolicyConfig(rule="cost"), Scaled(pred.load(), factor),
                         COST, online=state, clock="model")


@pytest.mark.parametrize("factor", [0.0, 20.0])
def test_a_miscalibrated_predictor_converges_to_the_best_arm(factor):
    prompt, ref = trace()
    arms = {"suffix": per_cost(replay(SuffixDrafter(), prompt, ref)),
            "aded-greedy": per_cost(replay(AdedDrafter(AdedConfig(greedy=True, size_by_cost=False)), prompt, ref))}
    best = max(arms.values())
    static = per_cost(replay(hybrid(factor, online=False), prompt, ref))
    h = hybrid(factor, online=True)
    learnt = per_cost(replay(h, prompt, ref))
    assert learnt >= 0.95 * best, (learnt, arms, static, h.online_state())
    if factor == 0.0:  # a predictor that sees no acceptance at all: alone, the policy loses
        assert static < 0.9 * best


def test_acceptance_curve_starts_at_its_prior_and_learns_the_real_shape():
    c = AcceptanceCurve(OnlineConfig(decay=0.02))
    # no data: a constant hazard under which the draft's expected accepted length is the prediction
    assert c.survival(5.0, 40).sum() == pytest.approx(5.0, rel=1e-3)
    assert c.survival(25.0, 27).sum() == pytest.approx(25.0, rel=1e-3)  # a geometric law's mean 25 gives ~16 here
    assert geometric(25.0, 27).sum() < 17
    h = prior_hazard(25.0, 27)  # the inverse of policy.capped_mean, whose p is 1 - h
    assert capped_mean((1 - h) / h, 27) == pytest.approx(25.0, rel=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(400):  # drafts rejected at their first token 70% of the time, else accepted whole
        sure = rng.random() < 0.3
        c.update(5.0, 32, 32 if sure else 0, 33 if sure else 1)
    s = c.survival(5.0, 32)
    assert s[0] == pytest.approx(0.3, abs=0.1) and s[-1] == pytest.approx(s[0], rel=0.1)  # all or nothing
    assert c.survival(0.2, 8).sum() == pytest.approx(0.2, rel=1e-3)  # other bins untouched
    geo = AcceptanceCurve(OnlineConfig(capped_prior=False))
    assert np.allclose(geo.survival(5.0, 40), geometric(5.0, 40))  # the old prior, for A/Bs
    assert c.snapshot().steps[5] == 400  # the prediction bin 4-6
    assert c.survival(5.0, 2)[0] == pytest.approx(0.3, abs=0.1)  # a class with no steps of its own reads as its bin


def test_acceptance_curve_tells_short_drafts_from_deep_ones_at_one_prediction():
    c = AcceptanceCurve(OnlineConfig())
    rng = np.random.default_rng(1)
    for _ in range(300):  # same prediction; 2-token drafts' first token right 25% of the time, 6-token ones' 60%
        c.update(1.5, 2, int(rng.random() < 0.25), 3)
        c.update(1.5, 6, 6 if rng.random() < 0.6 else 0, 7)
    assert c.survival(1.5, 2)[0] == pytest.approx(0.25, abs=0.08)
    assert c.survival(1.5, 6)[0] == pytest.approx(0.6, abs=0.08)
    assert 0.3 < c.survival(1.5, 40)[0] < 0.55  # deeper drafts, unseen: the bin's, pooled over both
    by_depth = c.snapshot().expected_accepted_at_depth
    assert set(by_depth) == {2, 8} and by_depth[2][2] < by_depth[8][2]


def test_acceptance_curve_counts_no_rejection_it_did_not_see():
    c = AcceptanceCurve(OnlineConfig())
    for _ in range(200):
        c.update(3.0, 4, 4, 5)  # cut to 4 and all accepted: censored at 4
        c.update(3.0, 30, 2, 2)  # not verified; the commit (2 tokens) agreed with it as far as it went
    s = c.survival(3.0, 30)
    assert s[3] > 0.95 and s[-1] > 0.5  # beyond what was seen, the last segment's (low) hazard
    assert c.rejected.sum() == 0


def test_bandit_prefers_the_fastest_mode_and_keeps_exploring():
    b = ModeBandit(OnlineConfig(explore=0.05, seed=3))
    rates = dict(zip(MODES, (50.0, 80.0, 30.0)))
    picks = []
    for _ in range(2000):
        m = b.pick()
        picks.append(m)
        b.update(m, int(rates[m]), 1.0)
    share = {m: picks[500:].count(m) / 1500 for m in MODES}
    assert b.best() == MODES[1] and share[MODES[1]] > 0.9
    assert all(share[m] > 0.005 for m in MODES)  # the floor: every mode stays measured
    again = ModeBandit(OnlineConfig(explore=0.05, seed=3))
    replayed = []
    for _ in range(2000):  # same seed, same outcomes: the same decisions
        m = again.pick()
        replayed.append(m)
        again.update(m, int(rates[m]), 1.0)
    assert replayed == picks
    state = b.snapshot()
    assert state.best in MODES and np.isclose(state.tokens_per_second[MODES[1]], 80)


def test_bandit_leaves_a_short_request_to_the_policy_then_measures_every_mode():
    cfg = OnlineConfig(warmup=32, min_steps=16, explore=0.0)
    b = ModeBandit(cfg)
    picks = []
    for _ in range(32 + 2 * 16):
        m = b.pick()
        picks.append(m)
        b.update(m, 3, 1.0)
    assert picks[:32] == [MODES[0]] * 32  # the warm-up: the policy alone
    assert picks[32:].count(MODES[1]) == 16 and picks[32:].count(MODES[2]) == 16  # then each other mode in turn
    assert all(b.steps[m] >= cfg.min_steps for m in MODES)


def test_the_model_arm_drafts_before_each_decision_and_its_curve_learns_per_bin():
    """Online, the model arm's draft is made before the policy decides (priced by its own
    curve, binned by what its drafter expects of it), so every policy step teaches that curve,
    verified or not: no step goes unmeasured, as with a shadow draft every few steps."""
    prompt, ref = trace()
    h = hybrid(1.0, online=True)
    recs = replay(h, prompt, ref)
    modes = h.online_state().modes.steps
    counts = h.online.model_acceptance.counts
    assert counts.sum() >= 0.9 * (modes["policy"] + modes["model-only"]) and modes["policy"] >= 0.5 * len(recs)
    assert (counts > 0).sum() >= 2  # more than one bin of the drafter's own estimate


def test_generation_stats_report_what_calibration_learnt(tiny_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("HVD_CACHE", str(tmp_path))  # the verify-cost curve is measured on the tiny target
    before = tiny_engine.drafter("hvd").online_state()  # shared by the method's requests: it may have history
    stats = tiny_engine.generate("abc abc abc", method="hvd", max_new_tokens=24).stats.to_dict()
    cal = stats["calibration"]
    learnt = sum(cal["modes"]["steps"].values()) - sum(before.modes.steps.values())
    assert stats["steps"] - 1 <= learnt <= stats["steps"]  # every step it drafted (not one with no budget left)
    assert {"acceptance", "modes", "verify_cost"} <= set(cal)
    curve = cal["verify_cost"]["curve"]  # which curve priced the drafts, how old, how it came to be
    assert curve["status"] in ("measured", "cached", "re-measured", "provisional") and curve["age_seconds"] >= 0
    assert "calibration" not in tiny_engine.generate("abc", method="hvd-static", max_new_tokens=8).stats.to_dict()


def test_a_step_is_priced_with_its_time_outside_drafting_and_verifying(monkeypatch):
    """On the wall clock the hybrid learns how long a step spends between its commit reaching
    `observe` and the next `propose` (learning, streaming out), and adds it, with all of its
    drafting, to what every option of the next decision costs: a dear step favours longer drafts."""
    import hvd.hybrid.drafter as hy
    from hvd.drafters.base import DecodeContext

    now = [100.0]
    monkeypatch.setattr(hy.time, "perf_counter", lambda: now[0])
    h = HybridDrafter("hvd", SuffixDrafter(), AdedDrafter(AdedConfig(greedy=True, size_by_cost=False)),
                      PolicyConfig(rule="cost"), pred.load(), COST, online=OnlineState(OnlineConfig(), COST),
                      clock="wall")
    prompt, _ = trace()
    h.begin(prompt)
    seen = []
    monkeypatch.setattr(h, "_decide", lambda cdraft, predicted, fixed, *a: seen.append(fixed) or hy.Decision(hy.NONE))
    for gap in (0.004, 0.004):
        h.propose(DecodeContext(prompt, len(prompt), 16))
        now[0] += 0.010  # the verify
        h.observe([prompt[0]])
        now[0] += gap  # after the commit: streaming it out, the engine's own bookkeeping
    h.propose(DecodeContext(prompt, len(prompt), 16))
    assert h.online.step_overhead == pytest.approx(0.004)
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(0.004)  # the frozen clock: drafting took no time
    assert h.online_state().step_overhead_ms == pytest.approx(4.0)


def test_followed_drafts_learn_how_far_a_cut_draft_would_have_gone():
    """A draft whose step committed only its first tokens (cut, or the step ended) stays open and
    is compared with what later steps commit: each position is counted when a commit decides
    it (the curve is never behind on a long copy's acceptances), the rejection at position 8
    that its own step could not see is learnt, and nothing is counted twice."""
    from hvd.hybrid.calibration import FollowedDrafts
    from hvd.types import Draft

    draft = Draft.chain(list(range(1, 21)))  # 20 tokens: 1, 2, ..., 20
    curve = AcceptanceCurve(OnlineConfig())
    followed = FollowedDrafts(curve)
    seg = {s: i for i, s in enumerate(AcceptanceCurve.SEGMENTS)}
    followed.add(3.0, draft, [1, 2, 3])  # its step committed 3 tokens, all the draft's
    assert curve.counts.sum() == 1 and curve.reached.sum() == pytest.approx(3.0) and curve.rejected.sum() == 0
    followed.extend([4, 5])  # a later step: two more positions accepted, counted now
    assert curve.reached.sum() == pytest.approx(5.0) and curve.rejected.sum() == 0
    followed.extend([6, 7, 99])  # the draft is rejected at position 8
    assert curve.counts.sum() == 1  # one draft, counted once however many commits it saw
    assert curve.rejected.sum() == pytest.approx(1.0) and curve.rejected[:, seg[5]].sum() == pytest.approx(1.0)
    assert curve.reached[:, seg[5]].sum() == pytest.approx(4.0)  # positions 5, 6, 7 accepted, 8 rejected
    assert curve.reached.sum() == pytest.approx(8.0)
    followed.extend([1, 2, 3])  # settled drafts see no more
    assert curve.reached.sum() == pytest.approx(8.0) and curve.counts.sum() == 1

    censored = AcceptanceCurve(OnlineConfig())
    open_at_end = FollowedDrafts(censored)
    open_at_end.add(3.0, draft, [1, 2])
    open_at_end.close()  # the request ended: counted as far as it was seen, no rejection
    assert censored.counts.sum() == 1 and censored.rejected.sum() == 0
    assert censored.reached.sum() == pytest.approx(2.0)

    capped = AcceptanceCurve(OnlineConfig(decay=0.0))
    many = FollowedDrafts(capped)
    for _ in range(FollowedDrafts.LIMIT + 1):
        many.add(3.0, draft, [1])
    many.extend([2])
    assert len(many._open) == FollowedDrafts.LIMIT  # the oldest stopped being followed to make room
    assert capped.reached.sum() == pytest.approx(FollowedDrafts.LIMIT + 1 + FollowedDrafts.LIMIT)


def test_a_followed_draft_is_counted_as_one_update_of_the_same_outcome():
    """Counting a followed draft step by step ends where counting it once, whole, would: the
    same positions reached and rejected (decay aside, which a draft pays once)."""
    from hvd.hybrid.calibration import FollowedDrafts
    from hvd.types import Draft

    cfg = OnlineConfig(decay=0.0)
    draft = Draft.chain(list(range(1, 41)))
    whole, steps = AcceptanceCurve(cfg), AcceptanceCurve(cfg)
    whole.learn(9.0, draft, list(range(1, 30)) + [0])  # rejected at 30
    followed = FollowedDrafts(steps)
    followed.add(9.0, draft, [1, 2])
    for lo in range(3, 30, 5):
        followed.extend(list(range(lo, min(lo + 5, 30))))
    followed.extend([0, 5])
    assert np.array_equal(whole.reached, steps.reached) and np.array_equal(whole.rejected, steps.rejected)
    assert np.array_equal(whole.counts, steps.counts)
