"""The verify-cost curve: its cut of a draft, its context slope, its cache key, how it is measured."""
import numpy as np
import pytest
import torch

from hvd.targets.verify_cost import VerifyCost, best_cut, monotone

LINEAR = VerifyCost((0, 1, 2, 4, 8), (1.0, 1.1, 1.2, 1.4, 1.8))  # 0.1 s per node on top of 1 s


def test_best_cut_maximises_expected_tokens_per_second():
    # n: 0 -> 1/1, 1 -> 1.9/1.1, 2 -> 2.7/1.2 = 2.25, 3 -> 2.8/1.3 = 2.15
    assert best_cut([0.9, 0.8, 0.1, 0.05], LINEAR) == 2
    assert best_cut([0.05, 0.01], LINEAR) == 0  # 1.05 / 1.1 < 1: plain decoding pays more
    assert best_cut([], LINEAR) == 0
    # a slow drafter makes each extra node relatively cheaper: 2.85/11.4 > 2.7/11.2
    assert best_cut([0.9, 0.8, 0.1, 0.05], LINEAR, fixed_seconds=10.0) == 4
    flat = VerifyCost((0, 64), (1.0, 1.0))  # a GPU-like flat curve: every node with p > 0 pays
    assert best_cut([0.5, 0.01, 0.001], flat) == 3
    # `start`: the cuts below it are no option (a draft the caller will verify: at least one node)
    assert best_cut([0.05, 0.01], LINEAR, start=1) == 1
    assert best_cut([0.9, 0.8, 0.1, 0.05], LINEAR, start=3) == 3
    assert best_cut([], LINEAR, start=1) == 1
    assert best_cut([0.5, 0.5], VerifyCost((0, 2), (1.0, 1.0))) == 2  # ties and rises: the best, first
    assert best_cut([0.0, 0.0], VerifyCost((0, 2), (1.0, 1.0))) == 0  # equal rates: the smallest


def test_cost_curve_cache_is_keyed_by_kernel_build(tmp_path):
    """A curve timed with one build of the exact kernels is not reused by another build."""
    from types import SimpleNamespace

    from hvd.targets.verify_cost import path_for

    a = SimpleNamespace(vocab_size=10, build_id="hvd_kernels-aaaa")
    b = SimpleNamespace(vocab_size=10, build_id="hvd_kernels-bbbb")
    assert path_for(a, tmp_path) != path_for(b, tmp_path)
    assert path_for(a, tmp_path) == path_for(SimpleNamespace(vocab_size=10, build_id="hvd_kernels-aaaa"), tmp_path)


def test_cost_curve_grows_with_the_context():
    c = VerifyCost((0, 8), (0.010, 0.030), 256, (2e-6, 6e-6))  # each node's attention reads the context
    assert c(8) == c(8, 256) == pytest.approx(0.030)
    assert c(8, 3256) == pytest.approx(0.030 + 3000 * 6e-6) and c(4, 3256) == pytest.approx(0.020 + 3000 * 4e-6)
    at = c.at(3256)
    assert at(8) == pytest.approx(c(8, 3256)) and at.at(100) is at  # a curve at a context is flat in it
    assert c(0, 0) > 0  # never free, however short the context
    m = monotone(VerifyCost((0, 8, 16), (0.01, 0.03, 0.02), 256, (1e-6, -1e-6, 3e-6)))  # noise: slopes >= 0, rising
    assert list(m.per_token) == sorted(m.per_token) and min(m.per_token) >= 0 and list(m.seconds) == sorted(m.seconds)
    assert VerifyCost.from_dict({"sizes": [0, 8], "seconds": [0.01, 0.03]}).per_token == ()  # a curve saved without slopes


def test_cost_of_one_size_is_the_many_sizes_curve_bit_for_bit():
    c = VerifyCost((0, 1, 2, 4, 8, 16, 31, 32, 64), (0.005, 0.006, 0.0063, 0.007, 0.0091, 0.013, 0.02, 0.0201, 0.04),
                   256, (1e-6, 1.1e-6, 1.3e-6, 2e-6, 3e-6, 5e-6, 9e-6, 9e-6, 2e-5))
    for n in (-1, 0, 0.5, 1, 3, 7.3, 31, 31.5, 64, 70):
        for ctx in (None, 10, 256, 3000):
            assert c(n, ctx) == float(c.many(np.asarray([n], dtype=np.float64), ctx)[0]), (n, ctx)


def test_measured_cost_has_the_targets_context_slope(monkeypatch):
    """`measure` times a target at two contexts: a target whose verify costs more per node the
    longer its context gets a slope per node, one that cannot hold the long context none."""
    from types import SimpleNamespace

    from hvd.targets.verify_cost import measure

    class Clocked:
        vocab_size, max_context = 50, 4096

        def __init__(self):
            self.len, self.now = 0, 0.0

        def prefill(self, ids):
            self.len = len(ids)

        def verify(self, root, draft):
            self.now += 0.01 + (1 + len(draft)) * self.len * 1e-6
            return torch.zeros(1 + len(draft), self.vocab_size)

        def commit(self, path):
            self.len += 1 + len(path)

    t = Clocked()
    monkeypatch.setattr("hvd.targets.verify_cost.time", SimpleNamespace(perf_counter=lambda: t.now))  # the target's clock
    c = measure(t, sizes=(0, 4, 8), repeats=1)
    t.max_context = 300
    short = measure(t, sizes=(0, 4, 8), repeats=1)
    assert c.per_token[0] == pytest.approx(1e-6, rel=0.05) and c.per_token[2] == pytest.approx(9e-6, rel=0.05)
    assert c(8, 3000) == pytest.approx(0.01 + 9 * 3000e-6, rel=0.02)
    assert short.per_token == ()


def test_monotone_pools_violators():
    c = monotone(VerifyCost((0, 1, 2, 4), (1.0, 3.0, 2.0, 4.0)))
    assert c.seconds == pytest.approx((1.0, 2.5, 2.5, 4.0))
    assert monotone(LINEAR) == LINEAR
