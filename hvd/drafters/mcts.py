"""Monte Carlo tree search over adaptive tri-grams (ADED's draft-tree search), compiled with numba.

The search tree's root is the context's last two tokens; a node's children are all tri-gram
successors of (its parent's token, its token), with prior p = tri-gram weight. One iteration:

    select   from the root, an unvisited child first (highest p), else the PUCT maximum
             Q/N + (c1 + ln((N_parent + c2 + 1) / c2)) * p * sqrt(N_parent) / (1 + N)
    expand   the reached leaf gets all its successors as children
    rollout  from the leaf, `rollout_depth` successors sampled in proportion to weight
    back up  reward = 1 + sum of weights along the selected path and the rollout,
             added to Q and N of every node from the leaf to the root

The tree lives in the arrays of `SearchTree` (C = capacity nodes; index 0 is the root), so a
search can run in chunks of iterations between time checks.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hvd.drafters.adaptive_trigrams import successors


class SearchTree:
    """The search tree's node arrays. Children of a node are contiguous: first[i] .. first[i]+nchild[i]."""

    def __init__(self, capacity: int, buffer: int, a: int, b: int) -> None:
        self.tok = np.zeros(capacity, np.int64)  # (C,) token of the node
        self.prev = np.zeros(capacity, np.int64)  # (C,) token before it (its parent's token)
        self.parent = np.full(capacity, -1, np.int64)  # (C,)
        self.first = np.zeros(capacity, np.int64)  # (C,) index of the first child
        self.nchild = np.zeros(capacity, np.int64)  # (C,)
        self.expanded = np.zeros(capacity, np.bool_)  # (C,)
        self.visits = np.zeros(capacity, np.int64)  # (C,) N
        self.value = np.zeros(capacity, np.float64)  # (C,) sum of rewards (Q = value / N)
        self.prior = np.zeros(capacity, np.float64)  # (C,) tri-gram weight p of the edge into the node
        self.depth = np.zeros(capacity, np.int64)  # (C,) 0 for the root
        self.size = np.ones(1, np.int64)  # (1,) nodes in use
        self.buf_tok = np.zeros(buffer, np.int64)  # (B,) successor scratch
        self.buf_w = np.zeros(buffer, np.float32)  # (B,)
        self.prev[0], self.tok[0] = a, b

    def arrays(self) -> tuple:
        return (self.tok, self.prev, self.parent, self.first, self.nchild, self.expanded,
                self.visits, self.value, self.prior, self.depth, self.size, self.buf_tok, self.buf_w)


@njit(cache=True)
def seed_rng(seed):
    np.random.seed(seed)


@njit(cache=True)
def _select_child(node, first, nchild, visits, value, prior, c1, c2):
    lo, hi = first[node], first[node] + nchild[node]
    best, best_p = -1, -1.0
    for c in range(lo, hi):  # unvisited children first, the most probable of them
        if visits[c] == 0 and prior[c] > best_p:
            best, best_p = c, prior[c]
    if best >= 0:
        return best
    n_parent = visits[node]
    explore = (c1 + math.log((n_parent + c2 + 1.0) / c2)) * math.sqrt(n_parent)
    best_score = -1e300
    for c in range(lo, hi):
        score = value[c] / visits[c] + explore * prior[c] / (1.0 + visits[c])
        if score > best_score:
            best, best_score = c, score
    return best


@njit(cache=True)
def _expand(state, node, tree, max_depth):
    tok, prev, parent, first, nchild, expanded, visits, value, prior, depth, size, buf_tok, buf_w = tree
    expanded[node] = True
    if depth[node] >= max_depth:
        return
    n = successors(state, prev[node], tok[node], buf_tok, buf_w)
    if size[0] + n > tok.shape[0]:
        return  # out of capacity: the node stays a leaf
    start = size[0]
    for j in range(n):
        c = start + j
        tok[c], prev[c], parent[c], prior[c], depth[c] = buf_tok[j], tok[node], node, buf_w[j], depth[node] + 1
        visits[c], value[c], expanded[c], nchild[c] = 0, 0.0, False, 0
    first[node], nchild[node] = start, n
    size[0] = start + n


@njit(cache=True)
def _rollout(state, a, b, steps, buf_tok, buf_w):
    """Sum of weights along `steps` successors sampled in proportion to weight from (a, b)."""
    total = 0.0
    for _ in range(steps):
        n = successors(state, a, b, buf_tok, buf_w)
        mass = 0.0
        for j in range(n):
            mass += buf_w[j]
        if n == 0 or mass <= 0.0:
            break
        r = np.random.random() * mass
        j = 0
        while j < n - 1 and r >= buf_w[j]:
            r -= buf_w[j]
            j += 1
        total += buf_w[j]
        a, b = b, buf_tok[j]
    return total


@njit(cache=True)
def iterate(state, tree, iterations, c1, c2, rollout_depth, max_depth):
    """Run `iterations` MCTS iterations on `tree` (SearchTree.arrays())."""
    tok, prev, parent, first, nchild, expanded, visits, value, prior, depth, size, buf_tok, buf_w = tree
    for _ in range(iterations):
        node, path = 0, 0.0
        while expanded[node] and nchild[node] > 0:
            node = _select_child(node, first, nchild, visits, value, prior, c1, c2)
            path += prior[node]
        if not expanded[node]:
            _expand(state, node, tree, max_depth)
        reward = 1.0 + path + _rollout(state, prev[node], tok[node], rollout_depth, buf_tok, buf_w)
        while node >= 0:
            visits[node] += 1
            value[node] += reward
            node = parent[node]


@njit(cache=True)
def best_successor(state, a, b, buf_tok, buf_w):
    """(token, weight, total weight of all successors) of the heaviest successor of (a, b);
    (-1, 0, 0) when there is none."""
    n = successors(state, a, b, buf_tok, buf_w)
    best, best_w, total = -1, 0.0, 0.0
    for j in range(n):
        total += buf_w[j]
        if buf_w[j] > best_w or best < 0:
            best, best_w = buf_tok[j], buf_w[j]
    return best, best_w, total


@njit(cache=True)
def greedy_chain(state, a, b, depth, buf_tok, buf_w, out_tok, out_score):
    """The chain of heaviest successors from (a, b), at most `depth` tokens: fills out_tok and
    out_score ((depth,) each; a token's score is its weight over its bigram's total) and
    returns its length (it stops where a bigram has no successor)."""
    n = 0
    for _ in range(depth):
        tok, w, mass = best_successor(state, a, b, buf_tok, buf_w)
        if tok < 0:
            break
        out_tok[n] = tok
        out_score[n] = w / mass if mass > 0 else 0.0
        n += 1
        a, b = b, tok
    return n
