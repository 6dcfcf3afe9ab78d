"""The cost calibrator: the steps' verify times correct the curve, per size bucket and at any
context, and a size the curve reads far too dear is still tried at the per-row bound."""
import numpy as np
import pytest

from hvd.cost.calibrator import STALE, TRUST, CostCalibrator
from hvd.cost.curve import VerifyCost

SIZES = (0, 1, 8, 16, 32, 64)
COST = VerifyCost(SIZES, tuple(0.025 * (1 + n / 3) for n in SIZES))


def test_cost_calibrator_scales_the_curve_per_size_bucket_at_any_context():
    curve = VerifyCost(COST.sizes, COST.seconds, 256, tuple(1e-5 * (1 + n) for n in COST.sizes))
    c = CostCalibrator(curve, trust=0, optimism=float("inf"))  # no bounds: the ratios alone
    assert c.at(1000)(40) == pytest.approx(curve(40, 1000))  # no data: the curve
    for i in range(300):  # this machine runs at half the curve's pace now, the context growing
        c.update(2, 2 * curve(2, 500 + i), 500 + i)
    assert c.at(3000)(2) == pytest.approx(2 * curve(2, 3000), rel=0.05)
    assert c.at(3000)(40) == pytest.approx(2 * curve(40, 3000), rel=0.05)  # a size it never verified follows that pace
    for i in range(300):
        c.update(40, 3 * curve(40, 800), 800)  # and big drafts are dearer still
        if i % 8 == 0:
            c.update(2, 2 * curve(2, 800), 800)  # (small ones verified now and then keep their own)
    assert c.at(800)(40) == pytest.approx(3 * curve(40, 800), rel=0.05)
    assert c.at(800)(2) == pytest.approx(2 * curve(2, 800), rel=0.1)


def test_a_size_the_curve_reads_too_dear_is_priced_at_the_per_row_rate_of_what_was_verified():
    wrong = VerifyCost(SIZES, tuple(s * (3.0 if n >= 4 else 1.0) for n, s in zip(SIZES, COST.seconds)))
    c = CostCalibrator(wrong, optimism=float("inf"))  # the per-row bound alone
    assert c.at(256)(8) == pytest.approx(wrong(8))  # nothing verified yet: the curve as it is
    for _ in range(TRUST):
        c.update(0, COST(0), 256)
        c.update(3, COST(3), 256)
    at = c.at(256)
    assert at(3) == pytest.approx(COST(3), rel=0.05)  # (its ratio pulled one pseudo-step towards the overall)
    assert at(4) == pytest.approx(at(3) * 5 / 4) and at(4) < wrong(4) / 2  # the rate of 3 nodes, per row
    assert at(16) == pytest.approx(at(3) * 17 / 4)
    for _ in range(TRUST):  # verified at that price, 4-7 nodes show their real cost ...
        c.update(6, COST(6), 256)
    at = c.at(256)
    assert at(6) == pytest.approx(COST(6), rel=0.3)  # (its own ratio, pulled one pseudo-step towards the overall)
    assert at(8) == pytest.approx(at(7) * 9 / 8)  # ... and bound the next bucket in turn
    seconds = c.at(256).points[1]
    assert np.all(np.diff(seconds) >= 0)  # never cheaper for more nodes


def test_a_right_curve_is_not_moved_by_the_bound():
    c = CostCalibrator(COST)
    for n in (0, 1, 2, 3) * TRUST:
        c.update(n, COST(n), 256)
    for n in (5, 12, 40):
        assert c.at(256)(n) == pytest.approx(COST(n))  # true costs grow slower than the rows


def test_the_snapshot_names_the_curve_and_what_was_learnt():
    from hvd.types import CurveInfo

    info = CurveInfo("abc", 0.0, 0.5, 0.98, "re-measured", "older than 7 days")
    c = CostCalibrator(COST.with_info(info))
    c.update(0, COST(0) / 2, 256)
    snap = c.snapshot()
    assert snap.curve is info and snap.steps[0] == 1 and snap.overall < 1
    d = snap.to_dict()
    assert d["curve"]["status"] == "re-measured" and d["curve"]["age_seconds"] > 0 and len(d["ratios"]) == 6


def test_until_a_bucket_is_trusted_a_draft_node_costs_at_most_half_a_plain_step():
    """A curve that reads every draft size too dear, with no size verified yet to anchor the
    per-row bound: the first drafts are still priced low enough to be tried."""
    dear = VerifyCost(SIZES, tuple(s * (1.0 if n == 0 else 4.0) for n, s in zip(SIZES, COST.seconds)))
    c = CostCalibrator(dear)
    at = c.at(256)
    assert at(0) == pytest.approx(COST(0)) and at(2) == pytest.approx(2 * COST(0)) and at(2) < dear(2)
    for _ in range(TRUST):  # 1-3 nodes verified: their bucket's own ratio (and anchor) takes over
        c.update(2, COST(2), 256)
    assert c.at(256)(2) == pytest.approx(COST(2), rel=0.15)
    assert c.at(256)(5) <= c.at(256)(2) * 6 / 3 * 1.001  # the next bucket: the anchor's per-row rate


def test_a_burst_while_drafts_were_verified_is_forgotten_once_the_machine_is_quiet():
    """Drafts verified during a burst (3x slower) learn that they are dear; then the machine is
    quiet and only plain steps run, since the drafts now read too dear. Within `STALE` steps
    the drafts' buckets forget and read the curve at the quiet pace again, so they get tried."""
    c = CostCalibrator(COST)
    for _ in range(40):  # the burst
        c.update(0, 3 * COST(0), 256)
        c.update(6, 3 * COST(6), 256)
    assert c.at(256)(6) == pytest.approx(3 * COST(6), rel=0.1)
    for i in range(STALE + 1):  # quiet: plain steps alone
        c.update(0, COST(0), 256)
        if i == STALE // 2:
            assert c.at(256)(6) > 2 * COST(6)  # the draft bucket still holds the burst ...
    assert c.at(256)(6) == pytest.approx(COST(6), rel=0.1)  # ... then forgets it
    assert c.snapshot().steps[2] == 0


def test_one_step_that_took_far_too_long_is_clipped():
    """A pause of the process (100x a verify) counts as `CLIP` x the prediction, no more."""
    c = CostCalibrator(COST)
    for _ in range(TRUST):
        c.update(6, COST(6), 256)
    c.update(6, 100 * COST(6), 256)
    assert c.at(256)(6) < 1.5 * COST(6)
    d = CostCalibrator(COST, clip=float("inf"))
    for _ in range(TRUST):
        d.update(6, COST(6), 256)
    d.update(6, 100 * COST(6), 256)
    assert d.at(256)(6) > 5 * COST(6)
