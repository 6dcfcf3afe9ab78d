"""The steps overrule the curve: a verify-cost curve corrected online by what every verify took.

A cached curve is a prior (`hvd/targets/verify_cost.py`): measured under another load, or
stale, it may read a draft size dearer than it is. Every step's verify is a measurement, so
`CostCalibrator` keeps realised against curve seconds (the curve at the step's context), one
ratio over the last tens of steps (the machine's pace now against the curve's) and one per draft-size
bucket, pulled towards the overall ratio by `prior` pseudo-observations; the rules read the
curve times those ratios.

What a bucket learnt is only as good as the moment it learnt it: a burst of other work while
its sizes were verified inflates its ratio, and once that ratio keeps the sizes from being
verified nothing would correct it. So a bucket with no verify in its last `STALE` steps (of
any size) forgets and starts again from the overall ratio, which every step keeps current;
and one step's seconds count at most `CLIP` times what was predicted, and at least 1 / `CLIP`
(a pause of the process, a first call's compile), so no single step stands for a trend.

A ratio learns only from the sizes that get verified, and a curve that reads some sizes far
too dear keeps them from ever being verified: the error would stand for good. So the sizes
are also bounded by the per-row rate of what was verified: a verify reads the weights once for
all its rows, so its cost per row does not grow with the rows. Each bucket that has seen
`trust` verifies is an anchor, at the mean size verified in it and its calibrated seconds
there; a size above its own bucket's anchor costs at most that anchor's rate per row, and a
size in a bucket with fewer verifies at most the rate of the nearest anchor below. A draft
that pays at that price is verified, its bucket learns the truth and anchors the next one up.
A curve that is right is rarely touched by the bound (true costs grow slower than rows), and a
size that really is dearer per row (a tile or pass boundary) shows it once its bucket is
trusted, since only the bucket's own anchor then bounds it. Below the first anchor above the
plain step the per-row bound is loose (n + 1 plain steps), so a bucket not yet trusted is also
priced at most at 1 + `OPTIMISM` x n plain steps: where verifying is memory-bound (CPUs, small
batches) a draft node costs far less than that, so a right curve is not touched, while a curve
that reads every draft size too dear still gets its small drafts tried and learnt.

`CalibrationSnapshot` is what the stats and `/metrics` read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from hvd.cost.curve import VerifyCost, seconds_later
from hvd.types import CalibrationSnapshot

SIZE_EDGES = (1, 4, 8, 16, 32)  # draft nodes: buckets 0 | 1-3 | 4-7 | ...
PRIOR = 1.0  # pseudo-observations at the overall ratio in each bucket (the overall ratio's: at 1)
DECAY = 0.02  # weight lost by a bucket's older steps at each of its updates (a memory of ~50 verifies)
PACE_DECAY = 1 / 16  # the same for the overall ratio at every step: the machine's pace now
STALE = 64  # steps of any size without a verify in a bucket after which it forgets
CLIP = 4.0  # one step's seconds count within [1 / CLIP, CLIP] x what was predicted
TRUST = 8  # verifies a bucket needs before its own ratio is taken without the per-row bound
OPTIMISM = 0.5  # until then a draft node is priced at most this share of a plain step (explored)


@dataclass
class _Ratios:
    """Decayed sums of realised and expected values per bin (added by `_decayed_add`); ratio
    pulled to a center by a prior."""

    bins: int
    prior: float
    decay: float
    realised: np.ndarray = field(init=False)
    expected: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.realised, self.expected = np.zeros(self.bins), np.zeros(self.bins)  # (bins,) each
        self.nodes, self.weight = np.zeros(self.bins), np.zeros(self.bins)  # decayed sums of sizes, of updates
        self.counts = np.zeros(self.bins, np.int64)  # (bins,) updates since the bin last forgot (not decayed)
        self.last = np.zeros(self.bins, np.int64)  # (bins,) the step of each bin's last update

    def ratio(self, b, scale, center: float = 1.0):
        """(prior x scale x center + realised) / (prior x scale + expected): `center` with no data.
        `b` and `scale` a bin and a float, or (k,) arrays of them (then (k,) ratios)."""
        return _bin_ratio(self.prior * scale, center, self.realised[b], self.expected[b])


class CostCalibrator:
    """A curve corrected by the realised verify seconds (see the module docstring). Shared by
    the requests of one method; `update` after each verify, `at` before each decision."""

    def __init__(self, curve: VerifyCost, size_edges: tuple[int, ...] = SIZE_EDGES, prior: float = PRIOR,
                 decay: float = DECAY, trust: int = TRUST, optimism: float = OPTIMISM, stale: int = STALE,
                 clip: float = CLIP) -> None:
        """`trust` 0 or `optimism` infinite turn the respective bounds off; `stale` and `clip`
        very large, forgetting and clipping."""
        self.curve, self.edges, self.trust, self.optimism = curve, size_edges, trust, optimism
        self.stale, self.clip = stale, clip
        self.r = _Ratios(len(size_edges) + 1, prior, decay)
        self.overall = _Ratios(1, prior, PACE_DECAY)
        top = curve.sizes[-1]  # `at` samples the curve at both ends of every bucket:
        sizes = sorted({*curve.sizes, *(e for e in self.edges if e <= top), *(e - 1 for e in self.edges if e <= top)})
        self._sizes = np.array(sizes, dtype=np.float64)  # (k,) so each whole size gets its own bucket's ratio
        self._size_list = tuple(self._sizes.tolist())
        self._edges = np.array(self.edges, dtype=np.float64)  # (buckets - 1,)
        self._buckets = np.searchsorted(self._edges, self._sizes, side="right")  # (k,)

    def _ratio(self, b, base):
        """The ratio of bucket(s) `b` for curve value(s) `base` (see `_Ratios.ratio`)."""
        return self.r.ratio(b, base, self.overall.ratio(0, self.curve(0)))

    def at(self, context: int) -> VerifyCost:
        """The calibrated curve after `context` tokens, as a curve of the draft size alone (one
        compiled loop: it runs every step)."""
        sizes, seconds = self.curve.points
        center = self.overall.ratio(0, self.curve(0))
        r = self.r
        out = _calibrated(self._sizes, sizes, seconds, self.curve.slope_points, float(context - self.curve.past),
                          self._buckets, r.realised, r.expected, r.nodes, r.weight, r.counts, r.prior, float(center),
                          self.trust, self.optimism)
        return VerifyCost.of_arrays(self._size_list, self._sizes, out, context)

    def update(self, n: int, seconds: float, context: int) -> None:
        """A verify of `n` nodes after `context` tokens took `seconds` (one compiled call)."""
        sizes, points = self.curve.points
        r, o = self.r, self.overall
        _count_cost(float(n), float(seconds), float(context - self.curve.past), sizes, points,
                    self.curve.slope_points, self._edges, r.realised, r.expected, r.nodes, r.weight, r.counts, r.last,
                    r.decay, r.prior, o.realised, o.expected, o.nodes, o.weight, o.counts, o.decay, o.prior,
                    self.stale, self.clip)

    def snapshot(self) -> CalibrationSnapshot:
        ratios = tuple(round(float(self._ratio(b, self.curve(self.edges[b - 1] if b else 0))), 3)
                       for b in range(self.r.bins))
        return CalibrationSnapshot(self.curve.info, tuple(self.edges), ratios, tuple(self.r.counts.tolist()),
                                   round(float(self.overall.ratio(0, self.curve(0))), 3))


@njit(cache=True)
def _bin_ratio(p, center, realised, expected):
    """A bucket's ratio of realised to expected seconds, `p` pseudo-seconds of prior pulling it to
    `center` (floats, or arrays of them)."""
    return (p * center + realised) / (p + expected)


@njit(cache=True)
def _curve_seconds(n, sizes, seconds, slopes, extra):
    """A cost curve's seconds for n nodes `extra` context tokens past its own, as
    `VerifyCost.__call__` reads it (`slopes` empty: no context slope)."""
    base = np.interp(n, sizes, seconds)
    if slopes.shape[0]:
        base = seconds_later(base, np.interp(n, sizes, slopes), extra)
    return base


@njit(cache=True)
def _decayed_add(realised, expected, nodes, weight, counts, b, value, base, n, decay):
    """Bin b of a `_Ratios`' sums: older steps x (1 - decay), plus this step's realised and
    expected seconds and its size."""
    keep = 1 - decay
    realised[b] = keep * realised[b] + value
    expected[b] = keep * expected[b] + base
    nodes[b] = keep * nodes[b] + n
    weight[b] = keep * weight[b] + 1.0
    counts[b] += 1


@njit(cache=True)
def _count_cost(n, seconds, extra, sizes, points, slopes, edges, realised, expected, nodes, weight, counts, last, decay,
                prior, o_realised, o_expected, o_nodes, o_weight, o_counts, o_decay, o_prior, stale, clip):
    """`CostCalibrator.update`, compiled: buckets with no verify in `stale` steps forget; the
    curve's seconds for n nodes at the step's context, added with the realised ones (within
    `clip` x the calibrated prediction either way) to n's size bucket and to the overall ratio."""
    step = o_counts[0] + 1  # this step's number
    for c in range(realised.shape[0]):
        if counts[c] > 0 and step - last[c] > stale:
            realised[c] = expected[c] = nodes[c] = weight[c] = 0.0
            counts[c] = 0
    base = _curve_seconds(n, sizes, points, slopes, extra)
    b = np.searchsorted(edges, n, side="right")
    op = o_prior * points[0]  # as `CostCalibrator.at` reads the overall ratio
    center = _bin_ratio(op, 1.0, o_realised[0], o_expected[0])
    predicted = base * _bin_ratio(prior * base, center, realised[b], expected[b])
    seen = min(max(seconds, predicted / clip), predicted * clip)
    _decayed_add(realised, expected, nodes, weight, counts, b, seen, base, n, decay)
    _decayed_add(o_realised, o_expected, o_nodes, o_weight, o_counts, 0, seen, base, n, o_decay)
    last[b] = step


@njit(cache=True)
def _calibrated(at, sizes, seconds, slopes, extra, buckets, realised, expected, nodes, weight, counts, prior, center,
                trust, optimism):
    """(k,) the curve at sizes `at` (k,, ascending), `extra` context tokens past its own, each
    times its bucket's ratio (`_Ratios.ratio`, pulled towards `center`), bounded by the per-row
    rate of the anchors and, in buckets not yet trusted, by 1 + `optimism` x n plain steps (the
    module docstring), then non-decreasing; `at[0]` is 0 (the plain step). `slopes` empty: no slope."""
    bins = realised.shape[0]
    anchor_n = np.full(bins, -1.0)  # (bins,) mean size verified in each trusted bucket (-1: none)
    anchor_rate = np.zeros(bins)  # (bins,) its calibrated seconds per row
    for b in range(bins):
        if counts[b] >= trust and weight[b] > 0:
            m = nodes[b] / weight[b]
            base = _curve_seconds(m, sizes, seconds, slopes, extra)
            anchor_n[b] = m
            anchor_rate[b] = base * _bin_ratio(prior * base, center, realised[b], expected[b]) / (m + 1.0)
    out = np.empty(at.shape[0])
    for i in range(at.shape[0]):
        base = _curve_seconds(at[i], sizes, seconds, slopes, extra)
        b = buckets[i]
        out[i] = base * _bin_ratio(prior * base, center, realised[b], expected[b])
        a = b
        if anchor_n[b] < 0:  # not trusted: the nearest trusted bucket below
            a = b - 1
            while a >= 0 and anchor_n[a] < 0:
                a -= 1
        if a >= 0 and at[i] > anchor_n[a]:
            out[i] = min(out[i], anchor_rate[a] * (at[i] + 1.0))
        if i and anchor_n[b] < 0:
            out[i] = min(out[i], out[0] * (1.0 + optimism * at[i]))
        if i and out[i] < out[i - 1]:
            out[i] = out[i - 1]
    return out
