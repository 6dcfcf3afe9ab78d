"""Cost-aware draft-tree sizing, for any drafter that can score its tree's nodes.

A drafter proposes a candidate tree and gives every node a *score* in [0, 1] (e.g. the
normalised tri-gram probability of the edge into it) and its depth. `AcceptanceCalibrator`
maps (score, depth) to the probability that the node is accepted *given that its parent is*,
from Beta counts updated online with what the target committed; a node's acceptance
probability p is the product of these along its root path, so it never exceeds its parent's.

`select` then keeps the rooted subtree that maximises expected tokens per second: nodes are
added by decreasing p (ancestors first) and the size n is the one maximising

    (1 + sum of p over the n nodes kept) / (draft_seconds + VerifyCost(n))

where VerifyCost is this machine's measured verification cost (hvd/targets/verify_cost.py; a tree
drafter reads the curve timed over branching trees, which on the transformers target cost
more per node than chains: a 4-D mask, a gather at commit), made non-decreasing first (a
measured curve is noisy; a bigger forward never costs less). `scaled` stretches a curve by a
factor, a knob for what the measurement misses.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from numba import njit

from hvd.cost.calibrator import CostCalibrator
from hvd.cost.curve import VerifyCost, best_cut, cut_at
from hvd.types import Draft


@dataclass(frozen=True)
class CalibrationConfig:
    score_edges: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 0.95)  # bins of the node score
    depth_edges: tuple[int, ...] = (1, 2, 4)  # depth buckets: <= 1, <= 2, <= 4, deeper
    prior_strength: float = 4.0  # pseudo-observations behind the prior mean of every cell
    prior_scale: float = 0.8  # prior mean of a cell = prior_scale * its score bin's midpoint
    max_count: float = 400.0  # counts of a cell are scaled down past this: old outcomes fade

    def __post_init__(self) -> None:
        if list(self.score_edges) != sorted(self.score_edges) or list(self.depth_edges) != sorted(self.depth_edges):
            raise ValueError("score_edges and depth_edges must be ascending")
        if self.prior_strength <= 0 or not 0 < self.prior_scale <= 1 or self.max_count <= self.prior_strength:
            raise ValueError("need prior_strength > 0, 0 < prior_scale <= 1, max_count > prior_strength")


class AcceptanceCalibrator:
    """P(node accepted | parent accepted) per (score bin, depth bucket), counted online."""

    def __init__(self, config: CalibrationConfig = CalibrationConfig()) -> None:
        self.config = config
        n_score, n_depth = len(config.score_edges) + 1, len(config.depth_edges) + 1
        edges = (0.0, *config.score_edges, 1.0)
        mid = np.array([(edges[i] + edges[i + 1]) / 2 for i in range(n_score)])  # (S,)
        self.score_edges = np.array(config.score_edges, dtype=np.float64)  # (S-1,) for compiled callers
        self.depth_edges = np.array(config.depth_edges, dtype=np.int64)  # (D-1,)
        prior = np.repeat(config.prior_scale * mid, n_depth)  # (S*D,) prior mean per cell
        self.accepted = prior * config.prior_strength  # (S*D,) Beta pseudo-counts, then real ones
        self.tested = np.full(n_score * n_depth, config.prior_strength)  # (S*D,)

    def cell(self, score: float, depth: int) -> int:
        cfg = self.config
        return bisect_right(cfg.score_edges, score) * (len(cfg.depth_edges) + 1) + bisect_right(cfg.depth_edges, depth - 1)

    def cells(self, scores: Sequence[float], depths: Sequence[int]) -> list[int]:
        return [self.cell(s, d) for s, d in zip(scores, depths)]

    def conditional(self, cells: Sequence[int]) -> np.ndarray:
        """(n,) P(accepted | parent accepted) of nodes in these cells."""
        idx = np.asarray(cells, dtype=np.int64)
        return self.accepted[idx] / self.tested[idx]

    def path_probs(self, parents: Sequence[int], cells: Sequence[int]) -> np.ndarray:
        """(n,) probability that each node's whole root path is accepted (nodes topologically ordered)."""
        cond = self.conditional(cells).tolist()
        out: list[float] = []
        for i, p in enumerate(parents):
            out.append(cond[i] * (out[p] if p >= 0 else 1.0))
        return np.array(out)

    def update(self, tokens: Sequence[int], parents: Sequence[int], cells: Sequence[int], committed: Sequence[int]) -> int:
        """Count the outcome of every node the target's tokens `committed` decide: a node whose
        parent path equals committed's prefix and whose depth is within committed was tested,
        and accepted when its token is committed's at its depth. Candidate nodes left out of the
        draft count too: greedy targets produce the same tokens whatever was drafted.
        Returns the number of nodes counted."""
        matched = [False] * len(tokens)
        depth = [0] * len(tokens)
        counted = 0
        for i, (t, p) in enumerate(zip(tokens, parents)):
            depth[i] = 1 if p < 0 else depth[p] + 1
            if (p >= 0 and not matched[p]) or depth[i] > len(committed):
                continue
            matched[i] = int(t) == int(committed[depth[i] - 1])
            c = cells[i]
            self.tested[c] += 1.0
            self.accepted[c] += float(matched[i])
            counted += 1
            if self.tested[c] > self.config.max_count:
                scale = self.config.max_count / self.tested[c]
                self.tested[c] *= scale
                self.accepted[c] *= scale
        return counted


_EMPTY = np.zeros(0)


@njit(cache=True)
def chain_cut(scores, n, score_edges, depth_edges, accepted, tested, sizes, seconds, slopes, extra, fixed,
              cells, probs):
    """A chain's first n nodes (`scores` (>= n,)): each node's calibration cell and path
    probability into `cells` and `probs`, as `AcceptanceCalibrator.cells` / `path_probs` give
    them, and the kept length, `best_cut` of those under the curve (sizes, seconds, slopes at
    `extra` context tokens past it; no sizes: all n). One compiled call: a chain drafter sizes
    its draft every step, where the same in Python would pay for cold code at each of its parts."""
    nd = depth_edges.shape[0] + 1
    p = 1.0
    for i in range(n):
        c = np.searchsorted(score_edges, scores[i], side="right") * nd + np.searchsorted(depth_edges, i, side="right")
        cells[i] = c
        p = accepted[c] / tested[c] * p
        probs[i] = p
    if sizes.shape[0] == 0:
        return n
    return cut_at(probs[:n], fixed, sizes, seconds, slopes, extra, 0)


@njit(cache=True)
def _count_chain(tokens, cells, committed, accepted, tested, max_count):
    """`AcceptanceCalibrator.update` for a chain: node i is tested when every node before it
    matched and committed reaches its depth, accepted when its token is committed's there."""
    for i in range(min(tokens.shape[0], committed.shape[0])):
        c = cells[i]
        hit = tokens[i] == committed[i]
        tested[c] += 1.0
        accepted[c] += 1.0 if hit else 0.0
        if tested[c] > max_count:
            scale = max_count / tested[c]
            tested[c] *= scale
            accepted[c] *= scale
        if not hit:
            break


def scaled(cost: VerifyCost, tree_factor: float) -> VerifyCost:
    """The curve with each draft node's extra cost over plain decoding multiplied by
    `tree_factor`: cost(0) + tree_factor * (cost(n) - cost(0)), at every context."""
    def stretch(values: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(values[0] + tree_factor * (v - values[0]) for v in values) if values else ()

    return VerifyCost(cost.sizes, stretch(cost.seconds), cost.past, stretch(cost.per_token), cost.info)


def order(parents: Sequence[int], probs: Sequence[float]) -> list[int]:
    """Nodes by decreasing probability, every node after its parent (ties: shallower first)."""
    depth: list[int] = []
    for p in parents:
        depth.append(1 if p < 0 else depth[p] + 1)
    ranked = sorted(range(len(parents)), key=lambda i: (-probs[i], depth[i], i))
    taken: set[int] = set()
    out: list[int] = []
    pending = ranked
    while pending:  # a single pass unless some child outranks its parent
        rest = []
        for i in pending:
            if parents[i] < 0 or parents[i] in taken:
                taken.add(i)
                out.append(i)
            else:
                rest.append(i)
        if len(rest) == len(pending):
            break
        pending = rest
    return out


def select(parents: Sequence[int], probs: Sequence[float], cost: VerifyCost, draft_seconds: float = 0.0,
           max_nodes: int = 1 << 30) -> list[int]:
    """Indices (ascending, so topological) of the rooted subtree of at most `max_nodes` nodes
    with the most expected tokens per second."""
    ranked = order(parents, probs)[:max_nodes]
    n = best_cut([probs[i] for i in ranked], cost, draft_seconds)
    return sorted(ranked[:n])


def subtree(draft: Draft, keep: Sequence[int]) -> Draft:
    """The draft restricted to `keep` (ascending, ancestor-closed), indices made compact."""
    new_index = {old: new for new, old in enumerate(keep)}
    parents = tuple(-1 if draft.parents[i] < 0 else new_index[draft.parents[i]] for i in keep)
    return Draft(tuple(draft.tokens[i] for i in keep), parents, draft.features, draft.source)


@dataclass
class _Mean:
    value: Optional[float] = None

    def add(self, x: float, smoothing: float) -> None:
        self.value = x if self.value is None else (1 - smoothing) * self.value + smoothing * x


class TreeSizer:
    """One drafter's cost-aware sizing: calibrates node scores against what the target
    commits and keeps, from each candidate tree, the subtree with the most expected tokens
    per second. Without a cost curve every candidate is kept (calibration still runs).
    The curve is read through a `CostCalibrator` (hvd/cost/calibrator.py) that learns what the
    drafter's verifies took (`verified`, which the decode loop calls with the measured time). A
    hybrid that verifies other drafts than this one's lends its own calibrator instead
    (`share_cost`), which it feeds itself."""

    def __init__(self, cost: Optional[VerifyCost], calibration: CalibrationConfig = CalibrationConfig(),
                 draft_smoothing: float = 0.1) -> None:
        self.cost = cost
        self.calibrator = AcceptanceCalibrator(calibration)
        self.draft_smoothing = draft_smoothing
        self.online: Optional[CostCalibrator] = CostCalibrator(cost) if cost is not None else None
        self.learns_cost = True  # False: `online` is lent by a hybrid, which feeds it
        self._timing = _Mean()  # a step's drafting time, running mean (shared with its forks)
        self._pending: Optional[tuple[list[int], list[int], list[int]]] = None  # last candidates: tokens, parents, cells

    def for_request(self) -> "TreeSizer":
        """A sizer for one request: its own pending candidates; the calibration (Beta counts per
        cell, bounded), the cost calibrator and the drafting-time mean shared with this one,
        learnt across requests."""
        fork = TreeSizer(None, self.calibrator.config, self.draft_smoothing)
        fork.cost, fork.online, fork.learns_cost = self.cost, self.online, self.learns_cost
        fork.calibrator, fork._timing = self.calibrator, self._timing
        return fork

    def share_cost(self, online: CostCalibrator) -> None:
        """Read the curve through `online`, which its owner feeds (this sizer no longer learns)."""
        self.online, self.learns_cost = online, False

    def verified(self, nodes: int, seconds: float, context: int) -> None:
        """A verify of the drafter's `nodes`-node draft after `context` tokens took `seconds`."""
        if self.learns_cost and self.online is not None:
            self.online.update(nodes, seconds, context)

    def curve_at(self, context: Optional[int]) -> Optional[VerifyCost]:
        """The curve the sizing reads after `context` tokens (None: the curve's own context),
        corrected by the steps so far; None without a curve."""
        if self.cost is None:
            return None
        if self.online is not None:
            return self.online.at(self.cost.past if context is None else context)
        return self.cost if context is None else self.cost.at(context)

    @property
    def draft_seconds(self) -> Optional[float]:
        return self._timing.value

    def choose(self, tokens: Sequence[int], parents: Sequence[int], scores: Sequence[float],
               draft_seconds: float, context: Optional[int] = None) -> tuple[list[int], np.ndarray]:
        """(kept node indices, ascending; every candidate's path acceptance probability (n,)),
        verification priced after `context` tokens (None: the curve's own context)."""
        cells = self.calibrator.cells(scores, Draft(tuple(tokens), tuple(parents)).depths())
        self._pending = (list(tokens), list(parents), cells)
        probs = self.calibrator.path_probs(parents, cells)  # (n,)
        if self.cost is None:
            return list(range(len(tokens))), probs
        self._timing.add(draft_seconds, self.draft_smoothing)
        return select(parents, probs.tolist(), self.curve_at(context), self._timing.value), probs

    def chain_arrays(self, context: Optional[int]) -> tuple:
        """What a compiled chain drafter sizes its chain by (`chain_cut`'s arguments after the
        scores): the calibration's edges and counts, and the cost curve's points, slopes and
        the context past them, with the drafting time so far (a running mean). Without a cost
        curve its points are empty (keep every node)."""
        cal, cost = self.calibrator, self.curve_at(context)
        fixed = self._timing.value or 0.0
        if cost is None:
            sizes = seconds = _EMPTY
        else:
            sizes, seconds = cost.points  # already at the context: no slope, nothing past it
        slopes, extra = _EMPTY, 0.0
        return cal.score_edges, cal.depth_edges, cal.accepted, cal.tested, sizes, seconds, slopes, extra, fixed

    def chose_chain(self, tokens: np.ndarray, cells: np.ndarray, draft_seconds: float) -> None:
        """A compiled chain drafter's candidates ((n,) tokens and calibration cells), for
        `observe` to count, and its drafting time."""
        self._pending = (tokens, None, cells)
        if self.cost is not None:
            self._timing.add(draft_seconds, self.draft_smoothing)

    def observe(self, committed: Sequence[int]) -> None:
        """Count the last candidates' outcomes against the tokens the target committed."""
        p, self._pending = self._pending, None
        if p is None:
            return
        tokens, parents, cells = p
        if parents is None:  # a chain, from `chose_chain`
            cal = self.calibrator
            _count_chain(tokens, cells, np.asarray(committed, dtype=np.int64), cal.accepted, cal.tested,
                         float(cal.config.max_count))
        else:
            self.calibrator.update(tokens, parents, cells, committed)

    def forget(self) -> None:
        """No outcome to count for this step (nothing was drafted from these candidates)."""
        self._pending = None
