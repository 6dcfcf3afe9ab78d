"""A wrong cost curve gives way to what the steps show: `hvd` starting from a curve that reads
every draft of 4+ nodes three times too dear (and flat up to 16 nodes, the shape a curve
measured during a burst of other work had) makes, within a bounded number of steps, the
choices the true curve makes. Deterministic: each verify's seconds come from the true curve
(a simulated machine), and the replay needs no target.

Each step's choice is scored by its expected tokens per second under the true curve, against
the choice the policy would make with the true curve in the same state (1.0: as good)."""
import inspect
import json

import numpy as np
import pytest

import hvd.hybrid.drafter as hybrid_drafter
from hvd.offline.replay import replay
from hvd.cost.calibrator import STALE, CostCalibrator
from hvd.cost.curve import VerifyCost
from hvd.drafters.aded import AdedConfig, AdedDrafter
from hvd.drafters.suffix import SuffixDrafter
from hvd.hybrid import predictor as pred
from hvd.hybrid.calibration import OnlineConfig, OnlineState
from hvd.hybrid.drafter import HybridDrafter
from hvd.hybrid.policy import PolicyConfig

SIZES = (0, 1, 2, 4, 8, 16, 24, 31, 32, 48, 64)
# SmolLM2-135M int8 on a 2-core AMD EPYC, one verify + commit after 256 tokens (a clean cache)
TRUE = VerifyCost(SIZES, (0.00599, 0.00670, 0.00682, 0.00926, 0.01182, 0.01980, 0.02700, 0.03278, 0.03368, 0.04769,
                          0.06164), 256, tuple(1e-6 * (1 + n / 3) for n in SIZES))
WRONG = VerifyCost(SIZES, tuple(s if n < 4 else max(3 * TRUE(16), 3 * s) for n, s in zip(SIZES, TRUE.seconds)), 256,
                   TRUE.per_token)
# every draft size 2x dearer than it is against a right plain step (points measured in a burst)
DEAR = VerifyCost(SIZES, tuple(s * (1 if n == 0 else 2) for n, s in zip(SIZES, TRUE.seconds)), 256, TRUE.per_token)
SETTLE = 40  # steps within which the choices must have converged


def ids(text: str) -> list[int]:
    return [1 + ord(c) % 250 for c in text]


def copy_edit() -> tuple[list[int], list[int]]:
    """A whole-file edit that copies the file with one rename."""
    src = inspect.getsource(json.decoder)[:3000]
    return ids(src), ids(src[:2000].replace("scanstring", "scan_string"))


def edit_with_changes() -> tuple[list[int], list[int]]:
    """An edit that changes every ninth word of the file: accepted lengths of a few tokens."""
    import re

    src = inspect.getsource(json.decoder)[:3000]
    words = re.split(r"(\W)", src[:2600])
    return ids(src), ids("".join(w.upper() if i % 9 == 0 and w.isalpha() else w for i, w in enumerate(words)))


def choices(monkeypatch, trace, start: VerifyCost, bound: bool = True, burst: int = 0) -> list[float]:
    """Per step of `hvd` replayed over `trace` from the curve `start` on a machine whose verifies
    cost `TRUE` (3x that in the first `burst` steps): the chosen arm's expected rate under TRUE
    over that of the choice TRUE makes."""
    scores = []
    choose = hybrid_drafter.choose

    def scored(cfg, predicted, score, survival, cache_seconds, model, cost, since_model=0, model_survival=None):
        made = choose(cfg, predicted, score, survival, cache_seconds, model, cost, since_model, model_survival)
        true = TRUE.at(cost.past)  # the curve the policy got is at this step's context
        best = choose(cfg, predicted, score, survival, cache_seconds, model, true, since_model, model_survival)

        def rate(d):
            if d.arm == "cache":
                return (survival[: d.cache_depth].sum() + 1) / (cache_seconds + true(d.cache_depth))
            if d.arm == "model":
                return (model_survival[: d.model_depth].sum() + 1) / (cache_seconds + true(d.model_depth))
            return 1 / (cache_seconds + true(0))

        scores.append(float(rate(made) / rate(best)))
        return made

    monkeypatch.setattr(hybrid_drafter, "choose", scored)
    state = OnlineState(OnlineConfig(), start)
    if not bound:
        state.cost = CostCalibrator(start, trust=1 << 30, optimism=float("inf"))  # the ratios alone
    steps = [0]

    def clock(nodes, context):
        steps[0] += 1
        return TRUE(nodes, context) * (3.0 if steps[0] <= burst else 1.0)

    model = AdedDrafter(AdedConfig(greedy=True), name="aded-greedy", cost=start)
    model.share_cost(state.cost)
    h = HybridDrafter("hvd", SuffixDrafter(), model, PolicyConfig(rule="cost"), pred.load(), start, online=state,
                      clock=clock)
    replay(h, *trace())
    return scores


@pytest.mark.parametrize("trace", [copy_edit, edit_with_changes])
@pytest.mark.parametrize("wrong", ["WRONG", "DEAR"])
def test_choices_from_a_wrong_curve_converge_to_the_true_curves(monkeypatch, trace, wrong):
    assert np.mean(choices(monkeypatch, trace, TRUE)) == pytest.approx(1.0)  # the reference itself
    got = choices(monkeypatch, trace, globals()[wrong])
    assert len(got) > 2 * SETTLE
    settled = [np.mean(got[i : i + 10]) for i in range(SETTLE, len(got) - 9, 10)]
    assert min(settled) >= 0.9 and np.mean(got[SETTLE:]) >= 0.97, (min(settled), np.mean(got[SETTLE:]))


def test_without_the_bounds_a_wrong_curve_stands(monkeypatch):
    """What the bounds are for: the ratios alone learn only from sizes that get verified, and the
    wrong curve keeps the copy's long drafts from being verified."""
    got = choices(monkeypatch, copy_edit, WRONG, bound=False)
    assert np.mean(got[SETTLE:]) < 0.8



def test_a_burst_at_the_start_is_forgotten_once_the_machine_is_quiet(monkeypatch):
    """The first 60 verifies run 3x slow (other work had the cores), drafts of every size among
    them; within two `STALE` spans of the quiet machine the choices are the true curve's again
    (a bucket's memory of the burst expires, where it used to stand while the bucket was
    verified now and then)."""
    burst = 60
    got = choices(monkeypatch, edit_with_changes, TRUE, burst=burst)
    after = got[burst + 2 * STALE:]
    windows = [np.mean(after[i : i + 10]) for i in range(0, len(after) - 9, 10)]
    assert len(after) > 2 * SETTLE and np.mean(after) >= 0.97 and min(windows) >= 0.9, (np.mean(after), windows)
