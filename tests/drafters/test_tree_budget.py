"""Cost-aware tree sizing: the chosen size on hand cases, ancestor order, calibration counts."""
import copy

import numpy as np
import pytest

from hvd.drafters.tree_budget import (AcceptanceCalibrator, CalibrationConfig, TreeSizer, best_cut, chain_cut, order,
                                      select, subtree)
from hvd.cost.curve import VerifyCost, monotone
from hvd.types import Draft, DraftFeatures

LINEAR = VerifyCost((0, 1, 2, 4, 8), (1.0, 1.1, 1.2, 1.4, 1.8))  # 0.1 s per node on top of 1 s


def test_select_keeps_a_rooted_subtree_by_probability():
    parents = [-1, 0, -1, 1, 2]
    probs = [0.5, 0.45, 0.6, 0.1, 0.3]
    assert order(parents, probs) == [2, 0, 1, 4, 3]
    # sizes by the order: 1.6/1.1, 2.1/1.2, 2.55/1.3 = 1.96, 2.85/1.4 = 2.04, 2.95/1.5
    assert select(parents, probs, LINEAR) == [0, 1, 2, 4]
    assert select(parents, probs, LINEAR, max_nodes=2) == [0, 2]
    assert order([-1, 0], [0.1, 0.9]) == [0, 1]  # a child never precedes its parent
    assert order([-1, 0, 1], [0.5, 0.5, 0.5]) == [0, 1, 2]  # ties: shallower first


def test_subtree_reindexes():
    d = Draft((10, 11, 12, 13), (-1, 0, -1, 2), DraftFeatures(score=1.0))
    s = subtree(d, [0, 2, 3])
    assert s.tokens == (10, 12, 13) and s.parents == (-1, -1, 1) and s.features == DraftFeatures(score=1.0)


def test_calibrator_counts_the_nodes_the_committed_tokens_decide():
    cfg = CalibrationConfig(score_edges=(0.5,), depth_edges=(), prior_strength=2.0, prior_scale=1.0)
    cal = AcceptanceCalibrator(cfg)
    lo, hi = cal.cell(0.2, 1), cal.cell(0.9, 3)
    assert (lo, hi) == (0, 1)
    assert cal.conditional([lo, hi]) == pytest.approx([0.25, 0.75])  # prior: bin midpoints
    tokens, parents, cells = [5, 6, 7, 8], [-1, 0, -1, 1], [hi, hi, lo, lo]
    # 5 and 5->6 accepted, 7 (a root child) rejected, 5->6->8 rejected (9 was committed)
    assert cal.update(tokens, parents, cells, [5, 6, 9]) == 4
    assert cal.accepted[hi] == pytest.approx(1.5 + 2) and cal.tested[hi] == pytest.approx(4)
    assert cal.accepted[lo] == pytest.approx(0.5) and cal.tested[lo] == pytest.approx(4)
    # only one token committed: node 1 (depth 2) and its child are undecided
    assert cal.update(tokens, parents, cells, [5]) == 2
    # the path probability is the product of conditionals along the root path
    cond = cal.conditional(cells)
    assert cal.path_probs(parents, cells) == pytest.approx([cond[0], cond[0] * cond[1], cond[2], cond[0] * cond[1] * cond[3]])


def test_calibrator_forgets_old_outcomes_past_max_count():
    cal = AcceptanceCalibrator(CalibrationConfig(score_edges=(), depth_edges=(), prior_strength=2.0, max_count=10.0))
    for _ in range(50):
        cal.update([1], [-1], [0], [2])
    assert cal.tested[0] == pytest.approx(10.0) and cal.conditional([0])[0] < 0.05
    for _ in range(20):
        cal.update([1], [-1], [0], [1])
    assert cal.conditional([0])[0] > 0.8


def test_cost_curves_are_measured_and_cached_per_shape(tiny_engine, tmp_path):
    from hvd.targets import verify_cost as cost

    shape = cost.tree_shape(16)
    assert len(shape) == 16 and all(-1 <= p < i for i, p in enumerate(shape)) and any(p != i - 1 for i, p in enumerate(shape))
    chain = cost.cached(tiny_engine.target, tmp_path)
    tree = cost.cached(tiny_engine.target, tmp_path, tree=True)
    assert chain.sizes == tree.sizes == cost.SIZES
    assert all(a <= b for a, b in zip(tree.seconds, tree.seconds[1:]))  # made non-decreasing
    t = tiny_engine.target
    assert cost.path_for(t, tmp_path) != cost.path_for(t, tmp_path, tree=True)  # one file per shape
    saved = {p.name for p in (tmp_path / "verify_cost").glob("*.json")}
    # each curve that passed its checks is saved (one measured while other work had the cores is
    # provisional and is not: tests/targets/test_verify_cost.py checks both on a simulated clock)
    assert saved == {cost.path_for(t, tmp_path, tr).name for tr, c in ((False, chain), (True, tree))
                     if c.info.status != "provisional"}, (chain.info, tree.info)
    assert cost.cached(t, tmp_path, tree=True) == tree  # this process's curve, not measured again


def test_a_chain_sized_in_one_compiled_call_matches_the_tree_path():
    """`chain_cut` and a chain's counting (`chose_chain` + `observe`) give what the general
    path gives: the same cells, path probabilities (bit for bit), cut and calibration counts."""
    rng = np.random.default_rng(0)
    sizes = (0, 1, 2, 4, 8, 16, 32)
    cost = monotone(VerifyCost(sizes, tuple(0.006 * (1 + n / 5) for n in sizes), 256, tuple(1e-7 * (1 + n) for n in sizes)))
    for _ in range(200):
        general, chained = TreeSizer(cost), TreeSizer(cost)
        for _ in range(int(rng.integers(0, 20))):  # some calibration history
            n = int(rng.integers(1, 9))
            general.choose(rng.integers(0, 5, n).tolist(), list(range(-1, n - 1)), rng.random(n).tolist(), 1e-4, 300)
            general.observe(rng.integers(0, 5, int(rng.integers(1, 10))).tolist())
        chained.calibrator = copy.deepcopy(general.calibrator)
        general._timing.value = chained._timing.value = 2e-4
        n, context = int(rng.integers(1, 9)), int(rng.integers(10, 4000))
        tokens, scores, chain = rng.integers(0, 5, n).tolist(), rng.random(n), list(range(-1, n - 1))
        cells = general.calibrator.cells(scores.tolist(), range(1, n + 1))
        probs = general.calibrator.path_probs(chain, cells)
        got_cells, got_probs = np.zeros(n, np.int64), np.zeros(n)
        keep = chain_cut(scores, n, *chained.chain_arrays(context), got_cells, got_probs)
        assert got_cells.tolist() == cells and got_probs.tolist() == probs.tolist()
        assert keep == best_cut(probs, cost.at(context), 2e-4)
        committed = rng.integers(0, 5, int(rng.integers(1, 10))).tolist()
        general.calibrator.update(tokens, chain, cells, committed)
        chained.chose_chain(np.array(tokens), got_cells, 1e-4)
        chained.observe(committed)
        assert np.array_equal(general.calibrator.accepted, chained.calibrator.accepted)
        assert np.array_equal(general.calibrator.tested, chained.calibrator.tested)
