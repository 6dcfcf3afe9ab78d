"""Per-request drafter state: every request runs on its own `for_request` fork; forks share
only load-time parts and the declared cross-request stores, never per-request state."""
import dataclasses
import random
import types

import numpy as np
import pytest
import torch

from hvd import methods
from hvd.errors import MethodUnavailable
from hvd.drafters.adaptive_trigrams import AdaptiveTrigrams
from hvd.drafters.base import DecodeContext, Drafter
from hvd.drafters.suffix import ResponseStore
from hvd.drafters.tree_budget import AcceptanceCalibrator, _Mean
from hvd.drafters.trigram import TrigramTable
from hvd.hybrid.calibration import OnlineState
from hvd.cost.curve import VerifyCost
from hvd.hybrid.policy import ArmEstimate, PolicyConfig
from hvd.hybrid.predictor import Predictor
from hvd.cost.calibrator import CostCalibrator

# What forks of one drafter may share: cross-request stores and learnt estimates (bounded),
# and what was loaded or measured before any request.
SHARED = (ResponseStore, AdaptiveTrigrams, AcceptanceCalibrator, CostCalibrator, _Mean, ArmEstimate, OnlineState, VerifyCost,
          Predictor, TrigramTable, PolicyConfig, torch.nn.Module, torch.Tensor)


def _mutable_parts(obj, seen, out, path="", depth=0):
    """id -> path of every mutable object reachable from `obj`'s attributes, stopping at shared kinds."""
    if id(obj) in seen or depth > 6 or isinstance(obj, (int, float, str, bool, bytes, type(None), tuple, frozenset)):
        return
    seen.add(id(obj))
    frozen = dataclasses.is_dataclass(obj) and type(obj).__dataclass_params__.frozen \
        or isinstance(obj, np.ndarray) and not obj.flags.writeable
    if frozen or isinstance(obj, SHARED) or callable(obj) and not hasattr(obj, "__dict__") \
            or isinstance(obj, (types.FunctionType, types.MethodType)):
        return
    if isinstance(obj, (list, dict, set, np.ndarray)) or hasattr(obj, "__dict__"):
        out[id(obj)] = path
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else \
        vars(obj).items() if hasattr(obj, "__dict__") and not isinstance(obj, type) else ()
    for k, v in children:
        if not isinstance(v, type) and not callable(getattr(v, "__func__", None)):
            _mutable_parts(v, seen, out, f"{path}.{k}", depth + 1)


def _state(d):
    out = {}
    _mutable_parts(d, set(), out)
    return out


def _available(engine, method):
    try:
        return engine.drafter(method)
    except MethodUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("method", [m for m in methods.METHODS if m != "ar"])
def test_forks_share_no_per_request_state(tiny_exact_engine, method):
    proto = _available(tiny_exact_engine, method)
    a, b = proto.for_request(), proto.for_request()
    assert isinstance(a, Drafter) and a is not b or type(proto).__name__ == "LayerSkipDrafter"
    if a is b:  # a drafter with no per-request state hands out itself
        assert _state(a).keys() <= _state(proto).keys()
        return
    sa, sb = _state(a), _state(b)
    shared = {sa[i] for i in sa.keys() & sb.keys()}
    assert not shared, f"{method}: forks share per-request state at {sorted(shared)}"


@pytest.mark.parametrize("method", ["pld", "suffix"])
def test_interleaved_requests_draft_as_alone(tiny_exact_engine, method):
    """Two requests stepped in turn on forks propose exactly what each proposes alone."""
    proto = _available(tiny_exact_engine, method)
    rng = random.Random(3)
    reqs = [([rng.randrange(1, 20) for _ in range(30)], [rng.randrange(1, 20) for _ in range(60)]) for _ in range(2)]

    def run(drafters, order):
        seqs = [list(p) for p, _ in reqs]
        drafts = [[], []]
        for r in range(2):
            drafters[r].begin(reqs[r][0])
        for r, step in order:
            out = reqs[r][1][step * 5 : step * 5 + 5]
            d = drafters[r].propose(DecodeContext(seqs[r], len(reqs[r][0]), 8))
            drafts[r].append((d.tokens, d.parents))
            drafters[r].observe(out)
            seqs[r] += out
        return drafts

    steps = [(r, s) for s in range(12) for r in range(2)]  # interleaved
    together = run([proto.for_request(), proto.for_request()], steps)
    alone = [run([proto.for_request(), proto.for_request()], [x for x in steps if x[0] == r])[r] for r in range(2)]
    assert together == alone


def test_adapted_trigrams_stay_bounded_after_many_requests():
    table = TrigramTable.empty(1 << 21)
    t = AdaptiveTrigrams(table, overlay_successors=4, max_overlay=500)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        t.adapt(rng.integers(0, 5000, size=16), 0.04, 3.0)
        assert t.overlay_used <= 500
    assert t.ov_keys.shape[0] <= 4 * 500
    window = [7, 8, 9]
    t.adapt(window, 0.04, 3.0)
    assert t.successors(7, 8) == {9: pytest.approx(0.04)}  # still learning after the overlay restarted
