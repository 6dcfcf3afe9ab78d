"""ADED (`aded`): training-free drafts from an adaptive tri-gram model searched by MCTS
(Liu et al., "Adaptive Draft-Verification for Efficient LLM Decoding", arXiv 2407.12021).

Per step: MCTS from the context's last two tokens over the tri-gram weights (hvd/drafters/
mcts.py); the `paths` most-visited nodes' root paths, each extended by its most likely next
token, merged into one tree of at most `max_nodes` nodes. After each step the tri-grams of the
last `adapt_window` context tokens gain `adapt_delta` (capped at `adapt_cap`; no renormalisation),
new ones created in an overlay (hvd/drafters/adaptive_trigrams.py).

Cost-aware sizing (an extension, not in ADED): every candidate node's acceptance probability
comes from its score (tri-gram weight over its bigram's total) and depth, calibrated online
against the committed tokens (hvd/drafters/tree_budget.py); the kept subtree maximises expected
tokens per second under the target's verify-cost curve. The ablations (`adapt=False`,
`greedy=True`) are sized by the same rule.

Adaptation state is kept across requests, as in the reference: the drafters `for_request`
hands out share one adapted table (a cross-request store, its overlay bounded by
`max_overlay` bigrams: past it the overlay starts afresh); `reset_per_request` restores the
built table at every `begin`. A fresh drafter (`methods.get("aded").make(target)`) starts
from the built table.

The static table is the default datastore (hvd/drafters/trigram_store.py) when the target's
vocabulary is the default model's, else empty: the drafter then learns only online.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence, Union

import numpy as np
from numba import njit

from hvd.drafters import tree_budget
from hvd.drafters.adaptive_trigrams import AdaptiveTrigrams
from hvd.drafters.base import Capabilities, DecodeContext
from hvd.drafters.mcts import SearchTree, best_successor, greedy_chain, iterate, seed_rng
from hvd.drafters.tree_budget import CalibrationConfig, TreeSizer, chain_cut
from hvd.drafters.trigram import TrigramTable
from hvd.cost.calibrator import CostCalibrator
from hvd.cost.curve import VerifyCost, monotone
from hvd.types import NO_FEATURES, Draft, DraftFeatures, OnlineSnapshot


@dataclass(frozen=True)
class AdedConfig:
    iterations: int = 150  # MCTS iterations per step
    c1: float = 32.0  # PUCT exploration constants
    c2: float = 8.0
    rollout_depth: int = 4
    max_depth: int = 16  # search-tree depth limit (also bounded by the step's draft budget)
    paths: int = 24  # most-visited root paths kept
    max_nodes: int = 64  # draft tree size limit
    adapt: bool = True  # online adaptation after every step
    adapt_window: int = 16  # last context tokens whose tri-grams are reinforced
    adapt_delta: float = 0.04
    adapt_cap: float = 3.0
    adapt_prompt: bool = False  # extension (not in ADED): reinforce the prompt's tri-grams once at begin
    reset_per_request: bool = False  # forget adaptation at every begin (the reference keeps it)
    overlay_successors: int = 12  # new successors kept per bigram beyond the static top-k
    max_overlay: int = 1 << 16  # overlay bigrams kept across requests at most (then it starts afresh)
    greedy: bool = False  # ablation: one chain of the heaviest successors instead of MCTS
    greedy_depth: int = 8
    time_budget_s: float = 0.0  # stop the search after this long (checked every `chunk` iterations); 0 = none
    chunk: int = 25
    seed: int = 0  # MCTS rollouts are seeded with this at every step: drafts are deterministic
    size_by_cost: bool = True  # with a cost curve: keep the subtree with the most expected tokens/s
    tree_cost_factor: float = 1.0  # multiplies a draft node's extra verify cost over the measured curve's
    calibration: CalibrationConfig = CalibrationConfig()  # node score -> acceptance, learned online

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.paths < 1 or self.max_nodes < 1 or self.chunk < 1:
            raise ValueError("iterations, paths, max_nodes and chunk must be positive")
        if self.c2 <= 0 or self.adapt_window < 3:
            raise ValueError("need c2 > 0 and adapt_window >= 3")
        if self.tree_cost_factor <= 0:
            raise ValueError("tree_cost_factor must be positive")


ANY_VOCAB = 1 << 21  # vocabulary of the empty table used when none is given
TableSource = Union[TrigramTable, Callable[[], TrigramTable]]


class AdedDrafter:
    name = "aded"
    capabilities = Capabilities()

    def __init__(self, config: AdedConfig = AdedConfig(), table: Optional[TableSource] = None, name: str = "aded",
                 cost: Optional[VerifyCost] = None) -> None:
        """`table`: the static tri-grams, or a function that loads them (called at the first
        `begin`, so construction does no I/O). None: an empty table (online learning only).
        `cost`: the target's verify-cost curve; None: no cost-aware sizing (the candidate tree
        as searched, within `paths` and `max_nodes`)."""
        self.config = config
        self.name = name
        self._source = table
        self.cost = None if cost is None else tree_budget.scaled(monotone(cost), config.tree_cost_factor)
        self._raw_cost = cost
        self.sizer = TreeSizer(self.cost if config.size_by_cost else None, config.calibration)
        self.trigrams: Optional[AdaptiveTrigrams] = None
        self._tokens: list[int] = []
        self._buf = 0  # successor scratch size: most static successors of a bigram + overlay ones
        self._context: Optional[int] = None  # tokens before the draft being made (its verify's price)
        self._scratch_arrays: Optional[tuple[np.ndarray, ...]] = None  # `_greedy`'s buffers (per fork)

    def with_config(self, **changes) -> "AdedDrafter":
        """A fresh drafter over the same table source with some config fields changed."""
        return AdedDrafter(replace(self.config, **changes), self._source, self.name, self._raw_cost)

    # ---- lifecycle -------------------------------------------------------------------------
    def load(self) -> "AdedDrafter":
        """Load the static table (the first `begin` does it otherwise); returns self."""
        if self.trigrams is None:
            cfg = self.config
            table = self._load_table()
            self.trigrams = AdaptiveTrigrams(table, cfg.overlay_successors, max_overlay=cfg.max_overlay)
            self._buf = int(np.max(np.diff(table.offsets), initial=0)) + cfg.overlay_successors
        return self

    def for_request(self) -> "AdedDrafter":
        """A drafter for one request: its own context and sizer state; the adapted tri-grams,
        the sizer's calibration and the cost curve shared with this one."""
        self.load()
        fork = copy.copy(self)
        fork.sizer = self.sizer.for_request()
        fork._tokens = []
        fork._scratch_arrays = None
        return fork

    def begin(self, prompt: Sequence[int]) -> None:
        cfg = self.config
        if self.trigrams is None:
            self.load()
        elif cfg.reset_per_request:
            self.trigrams.reset()
        self._tokens = list(prompt)
        self.sizer.forget()
        if cfg.adapt and cfg.adapt_prompt:
            self.trigrams.adapt(self._tokens, cfg.adapt_delta, cfg.adapt_cap)

    def observe(self, committed: Sequence[int]) -> None:
        if self.trigrams is None:
            self.begin(())
        self._tokens.extend(committed)
        self.sizer.observe(committed)
        cfg = self.config
        if cfg.adapt:
            self.trigrams.adapt(self._tokens[-cfg.adapt_window :], cfg.adapt_delta, cfg.adapt_cap)

    def end(self, output: Sequence[int]) -> None:
        pass

    def propose(self, ctx: DecodeContext) -> Draft:
        cfg = self.config
        depth = min(ctx.max_draft, cfg.greedy_depth if cfg.greedy else cfg.max_depth)
        self.sizer.forget()
        if depth <= 0 or len(ctx.tokens) < 2 or self.trigrams is None:
            return Draft.empty()
        a, b = ctx.tokens[-2], ctx.tokens[-1]
        self._context = len(ctx.tokens)
        if not (0 <= a < self.trigrams.table.vocab and 0 <= b < self.trigrams.table.vocab):
            return Draft.empty()
        return self._greedy(a, b, depth) if cfg.greedy else self._search(a, b, depth)

    def verified(self, nodes: int, seconds: float, context: int) -> None:
        """The decode loop's measured verify of this drafter's draft: the sizing's cost learns it."""
        self.sizer.verified(nodes, seconds, context)

    def share_cost(self, online: CostCalibrator) -> None:
        """Size drafts by a calibrator its owner feeds (a hybrid that verifies what it chooses)."""
        self.sizer.share_cost(online)

    def online_state(self) -> Optional[OnlineSnapshot]:
        """What the sizing's cost calibration has learnt (None without a cost curve)."""
        online = self.sizer.online
        return None if online is None or not self.sizer.learns_cost else OnlineSnapshot(verify_cost=online.snapshot())

    # ---- drafting --------------------------------------------------------------------------
    def _load_table(self) -> TrigramTable:
        src = self._source
        if src is None:
            return TrigramTable.empty(ANY_VOCAB)
        return src if isinstance(src, TrigramTable) else src()

    def _search(self, a: int, b: int, depth: int) -> Draft:
        cfg, state = self.config, self.trigrams.state
        t0 = time.perf_counter()
        tree = SearchTree(1 + cfg.iterations * self._buf, self._buf, a, b)
        arrays = tree.arrays()
        seed_rng(cfg.seed)
        done = 0
        while done < cfg.iterations:
            n = min(cfg.chunk, cfg.iterations - done)
            iterate(state, arrays, n, cfg.c1, cfg.c2, cfg.rollout_depth, depth)
            done += n
            if cfg.time_budget_s > 0 and time.perf_counter() - t0 > cfg.time_budget_s:
                break
        tokens, parents, scores = self._candidates(tree, depth)
        features = DraftFeatures(iterations=float(done), root_visits=float(tree.visits[0]))
        return self._finish(tokens, parents, scores, t0, features)

    def _candidates(self, tree: SearchTree, depth: int) -> tuple[list[int], list[int], list[float]]:
        """The `paths` most-visited nodes (an ancestor-closed set: a parent has at least its
        children's visits, and ties go to the shallower node), each extended by its heaviest
        successor, at most `max_nodes` nodes: tokens, parents and each node's score (its
        tri-gram weight over the total weight of its siblings' bigram)."""
        cfg, n = self.config, int(tree.size[0])
        visited = np.flatnonzero(tree.visits[1:n] > 0) + 1  # (m,) node ids, root excluded
        order = visited[np.lexsort((visited, tree.depth[visited], -tree.visits[visited]))][: cfg.paths]  # (k,)
        index: dict[tuple[int, int], int] = {}  # (draft parent, token) -> draft node
        node_of: dict[int, int] = {}  # search node -> draft node
        tokens: list[int] = []
        parents: list[int] = []
        scores: list[float] = []

        def add(parent: int, token: int, score: float) -> int:
            key = (parent, token)
            if key not in index:
                index[key] = len(tokens)
                tokens.append(token)
                parents.append(parent)
                scores.append(score)
            return index[key]

        for node in sorted(order.tolist(), key=lambda i: (tree.depth[i], i)):  # parents before children
            if len(tokens) >= cfg.max_nodes:
                break
            up = int(tree.parent[node])
            lo, hi = int(tree.first[up]), int(tree.first[up] + tree.nchild[up])
            mass = float(tree.prior[lo:hi].sum())
            p = -1 if up == 0 else node_of[up]
            node_of[node] = add(p, int(tree.tok[node]), float(tree.prior[node]) / mass if mass > 0 else 0.0)
        for node in order.tolist():  # extensions, most-visited path first
            if len(tokens) >= cfg.max_nodes:
                break
            if node in node_of and tree.depth[node] < depth:
                tok, w, mass = best_successor(self.trigrams.state, tree.prev[node], tree.tok[node], tree.buf_tok, tree.buf_w)
                if tok >= 0:
                    add(node_of[node], int(tok), float(w) / mass if mass > 0 else 0.0)
        return tokens, parents, scores

    def _greedy(self, a: int, b: int, depth: int) -> Draft:
        """The chain of heaviest successors, sized like any candidate tree (`_finish`), in one
        compiled call (`_greedy_sized`); the sizer prices it with its drafting time so far."""
        t0 = time.perf_counter()
        buf_tok, buf_w, out_tok, out_score, cells, probs = self._scratch(depth)
        n, keep = _greedy_sized(self.trigrams.state, a, b, depth, buf_tok, buf_w, out_tok, out_score, cells, probs,
                                *self.sizer.chain_arrays(self._context))
        if n == 0:
            self.sizer.forget()
            return Draft.empty()
        self.sizer.chose_chain(out_tok[:n].copy(), cells[:n].copy(), time.perf_counter() - t0)
        if not keep:
            return Draft.empty()
        return _sized(out_tok[:keep].tolist(), range(-1, keep - 1), n, float(probs[:keep].sum()),
                      float(sum(out_score[:keep].tolist())), NO_FEATURES)

    def _scratch(self, depth: int) -> tuple[np.ndarray, ...]:
        """This drafter's scratch arrays for `_greedy` (each fork its own): successor buffers
        (B,) and the chain's tokens, scores, cells and path probabilities (depth,)."""
        if self._scratch_arrays is None or self._scratch_arrays[2].shape[0] < depth:
            self._scratch_arrays = (np.zeros(self._buf, np.int64), np.zeros(self._buf, np.float32),
                                    np.zeros(depth, np.int64), np.zeros(depth), np.zeros(depth, np.int64),
                                    np.zeros(depth))
        return self._scratch_arrays

    def _finish(self, tokens: list[int], parents: list[int], scores: list[float], t0: float,
                features: DraftFeatures) -> Draft:
        """Keep the candidates' rooted subtree with the most expected tokens per second (when
        a cost curve is given), remember the candidates for calibration, build the Draft."""
        if not tokens:
            self.sizer.forget()
            return Draft.empty()
        keep, probs = self.sizer.choose(tokens, parents, scores, time.perf_counter() - t0, self._context)
        if not keep:
            return Draft.empty()
        draft = tree_budget.subtree(Draft(tuple(tokens), tuple(parents)), keep)
        return _sized(draft.tokens, draft.parents, len(tokens), float(probs[keep].sum()),
                      float(sum(scores[i] for i in keep)), features)


def _sized(tokens: Sequence[int], parents: Sequence[int], candidates: int, expected: float, score: float,
           features: DraftFeatures) -> Draft:
    """A sized draft with what its readers use: its size and its candidates', the accepted
    length its calibrated node probabilities expect (the hybrids' model-arm curve bins by it)
    and its summed node scores."""
    return Draft(tuple(tokens), tuple(parents),
                 replace(features, draft_length=float(len(tokens)), candidates=float(candidates),
                         expected_accepted=expected, score=score))


@njit(cache=True)
def _greedy_sized(state, a, b, depth, buf_tok, buf_w, out_tok, out_score, cells, probs, score_edges, depth_edges,
                  accepted, tested, sizes, seconds, slopes, extra, fixed):
    """(candidates, kept): the greedy chain (`greedy_chain`) and its cut (`tree_budget.chain_cut`)."""
    n = greedy_chain(state, a, b, depth, buf_tok, buf_w, out_tok, out_score)
    return n, chain_cut(out_score, n, score_edges, depth_edges, accepted, tested, sizes, seconds, slopes, extra,
                        fixed, cells, probs)


def for_target(target, config: AdedConfig = AdedConfig(), name: str = "aded",
               cost: Optional[VerifyCost] = None, assets=None) -> AdedDrafter:
    """A drafter over the model's own datastore (`assets`, hvd/assets.py: made by `hvd prepare`),
    else the default datastore when `target` has the default model's vocabulary (built and
    cached on first use), else over an empty table (it still adapts to outputs). Its trees
    are sized by `cost`, else by the target's measured verify-cost curve (hvd/targets/verify_cost.py:
    measured once per machine and cached; measuring uses the target, so call this before a
    generation, never during one)."""
    from hvd.drafters.trigram_store import table_for

    if cost is None and config.size_by_cost:
        from hvd.targets.verify_cost import cached
        from hvd.machine import cache_dir

        cost = cached(target, cache_dir(), tree=not config.greedy)  # trees are timed as trees
    vocab = int(target.vocab_size)
    return AdedDrafter(config, lambda: table_for(vocab, assets), name, cost).load()
