"""The verify-cost curve: its cut of a draft, its context slope, its cache key, how it is measured."""
import time

import numpy as np
import pytest
import torch

from hvd.cost.curve import VerifyCost, best_cut, monotone

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


def test_cost_curve_cache_is_keyed_by_the_targets_fingerprint(tmp_path):
    """A curve timed on one target (weights, precision, kernels' build) is not reused by another;
    chains and trees are timed apart."""
    from types import SimpleNamespace

    from hvd.targets.verify_cost import path_for

    a = SimpleNamespace(fingerprint="aaaa")
    b = SimpleNamespace(fingerprint="bbbb")
    assert path_for(a, tmp_path) != path_for(b, tmp_path)
    assert path_for(a, tmp_path) == path_for(SimpleNamespace(fingerprint="aaaa"), tmp_path)
    assert path_for(a, tmp_path) != path_for(a, tmp_path, tree=True)


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


class Clocked:
    """A target on a simulated clock: a verify costs 10 ms + 1 us per row per context token,
    times `pace`; `burst(i)` says whether the i-th verify runs while another process has the
    cores (then it takes `burst_factor` times longer and the process gets a third of the CPU)."""

    vocab_size, max_context, fingerprint = 50, 4096, "clocked"

    def __init__(self, pace=1.0, burst=lambda i: False, burst_factor=3.0):
        self.len, self.now, self.cpu, self.calls = 0, 0.0, 0.0, 0
        self.pace, self.burst, self.burst_factor = pace, burst, burst_factor

    def prefill(self, ids):
        self.len = len(ids)

    def verify(self, root, draft):
        dt = self.pace * (0.01 + (1 + len(draft)) * self.len * 1e-6)
        busy = self.burst(self.calls)
        self.now += dt * (self.burst_factor if busy else 1.0)
        self.cpu += dt / 3 if busy else dt
        self.calls += 1
        return torch.zeros(1 + len(draft), self.vocab_size)

    def commit(self, path):
        self.len += 1 + len(path)


def on_clock(monkeypatch, t):
    from types import SimpleNamespace

    monkeypatch.setattr("hvd.targets.verify_cost.time",
                        SimpleNamespace(perf_counter=lambda: t.now, process_time=lambda: t.cpu, time=time.time))


def test_measured_cost_has_the_targets_context_slope(monkeypatch):
    """`measure` times a target at two contexts: a target whose verify costs more per node the
    longer its context gets a slope per node, one that cannot hold the long context none."""
    from hvd.targets.verify_cost import measure

    t = Clocked()
    on_clock(monkeypatch, t)
    m = measure(t, sizes=(0, 4, 8), rounds=3)
    c = m.curve
    assert m.problems == ()
    assert c.per_token[0] == pytest.approx(1e-6, rel=0.05) and c.per_token[2] == pytest.approx(9e-6, rel=0.05)
    assert c(8, 3000) == pytest.approx(0.01 + 9 * 3000e-6, rel=0.02)
    t.max_context = 300
    assert measure(t, sizes=(0, 4, 8), rounds=3).curve.per_token == ()


def test_a_burst_of_other_work_during_the_measurement_does_not_enter_the_curve(monkeypatch):
    """Every sample of a whole stretch of calls runs 3x slower with a third of the CPU: the
    samples are dropped by their CPU share, and the interleaved rounds keep enough of each size."""
    from hvd.targets.verify_cost import measure

    clean = Clocked()
    on_clock(monkeypatch, clean)
    want = measure(clean, sizes=(0, 1, 2, 4, 8, 16), rounds=5).curve
    t = Clocked(burst=lambda i: 44 <= i < 56 or 100 <= i < 106)  # two rounds of the far pass, one of the last
    on_clock(monkeypatch, t)
    m = measure(t, sizes=(0, 1, 2, 4, 8, 16), rounds=5)
    assert m.problems == ()
    for n in (0, 4, 16):
        for ctx in (256, 2048):
            assert m.curve(n, ctx) == pytest.approx(want(n, ctx), rel=0.03), (n, ctx)


def test_a_machine_whose_pace_changes_while_it_is_measured_gives_a_provisional_curve(monkeypatch, tmp_path):
    """The process keeps its CPU but slows down pass after pass (another job's cache and memory
    traffic): the near pass timed again disagrees each time, so the curve is used, not saved."""
    from hvd.targets import verify_cost as vc

    t = Clocked()
    orig = t.verify

    def slower(root, draft):
        t.pace = 1.0 + 0.5 * (t.calls // 66 % 3)  # 66 calls a pass: 11 sizes, a warm-up and 5 rounds
        return orig(root, draft)

    t.verify = slower
    t.build_id = "clocked"
    on_clock(monkeypatch, t)
    vc.forget()
    c = vc.cached(t, tmp_path)
    assert c.info.status == "provisional" and "pace" in c.info.reason
    assert not vc.path_for(t, tmp_path).exists()


def planted(curve: VerifyCost) -> VerifyCost:
    """A curve given the shape of one measured during a burst: every point 2.3x, 4+ nodes 4.5x
    and flat, 164 us per context token at every size."""
    seconds = [s * (4.5 if n >= 4 else 2.3) for n, s in zip(curve.sizes, curve.seconds)]
    flat = max(seconds[i] for i, n in enumerate(curve.sizes) if n >= 4) if len(seconds) > 1 else seconds[0]
    seconds = [flat if n >= 4 else s for n, s in zip(curve.sizes, seconds)]
    return VerifyCost(curve.sizes, tuple(seconds), curve.past, (164e-6,) * len(curve.sizes))


def test_a_cached_curve_is_checked_at_start_and_measured_again_when_the_machine_disagrees(monkeypatch, tmp_path):
    import json

    from hvd.targets import verify_cost as vc

    t = Clocked()
    t.build_id = "clocked"
    on_clock(monkeypatch, t)
    vc.forget()
    first = vc.cached(t, tmp_path)
    assert first.info.status == "measured" and first.info.load >= 0 and 0 < first.info.cpu_share <= 1
    saved = json.loads(vc.path_for(t, tmp_path).read_text())
    assert saved["format"] == vc.FORMAT and {"made_at", "load", "cpu_share", "curve"} <= set(saved)
    assert vc.cached(t, tmp_path) is first  # once per process
    vc.forget()
    calls = t.calls
    again = vc.cached(t, tmp_path)
    assert again.info.status == "cached" and again == first
    assert t.calls - calls == len(vc.CHECK_SIZES) * (vc.CHECK_ROUNDS + 1)  # the check: a few verifies

    t.pace = 2.0  # the machine is busy now: slower than its curve everywhere, which is no reason
    vc.forget()
    assert vc.cached(t, tmp_path).info.status == "cached"
    t.pace = 1.0

    bad = planted(first)  # saved as if measured now, quietly
    vc.path_for(t, tmp_path).write_text(json.dumps({**saved, "curve": bad.to_dict()}))
    vc.forget()
    fixed = vc.cached(t, tmp_path)
    assert fixed.info.status == "re-measured" and "curve says" in fixed.info.reason
    assert fixed(16, 1000) == pytest.approx(first(16, 1000), rel=0.02)
    assert json.loads(vc.path_for(t, tmp_path).read_text())["curve"] == fixed.to_dict()  # saved again

    vc.forget()
    old = vc.cached(t, tmp_path, now=time.time() + vc.MAX_AGE + 60)
    assert old.info.status == "re-measured" and "older than" in old.info.reason

    vc.path_for(t, tmp_path).write_text(json.dumps(first.to_dict()))  # a curve saved without when or how
    vc.forget()
    assert vc.cached(t, tmp_path).info.status == "cached"
    vc.path_for(t, tmp_path).write_text("{")
    vc.forget()
    assert vc.cached(t, tmp_path).info.reason == "the cached file is not JSON"
    vc.forget()


def test_implausible_shapes_are_named():
    from hvd.cost.curve import implausible

    assert implausible(VerifyCost((0, 1, 4, 16), (0.010, 0.011, 0.014, 0.030), 256, (1e-6,) * 4), 2048) == []
    assert "less than" in implausible(VerifyCost((0, 1, 4), (0.010, 0.020, 0.012)))[0]
    assert "plain steps" in implausible(VerifyCost((0, 1, 4), (0.010, 0.030, 0.031)))[0]
    # the planted shape of a far pass run during a burst: a plain step 18x dearer at 8x the context
    planted = VerifyCost((0, 4, 16), (0.0167, 0.0576, 0.0576), 256, (164e-6,) * 3)
    assert any("context" in p for p in implausible(planted, 2048))


def test_monotone_pools_violators():
    c = monotone(VerifyCost((0, 1, 2, 4), (1.0, 3.0, 2.0, 4.0)))
    assert c.seconds == pytest.approx((1.0, 2.5, 2.5, 4.0))
    assert monotone(LINEAR) == LINEAR


def test_a_few_spread_sizes_pass_but_many_or_one_wild_do_not():
    from hvd.targets.verify_cost import _noisy

    sizes = tuple(range(11))
    quiet = (0.3, 0.4, 0.1) + (0.05,) * 8  # a quiet VM: two small sizes spread by a third or more
    assert _noisy(sizes, quiet, "") == []
    many = (0.4, 0.4, 0.4, 0.5) + (0.05,) * 7
    assert len(_noisy(sizes, many, "")) == 4
    wild = (1.4,) + (0.05,) * 10
    assert _noisy(sizes, wild, " after 2048 tokens") == ["0 nodes vary by 140% of their median after 2048 tokens"]
