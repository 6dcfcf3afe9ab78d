"""Suffix drafter (`suffix`), after SuffixDecoding (Snowflake ArcticInference).

Two token stores: this request's prompt + output, and earlier responses (shared by the
requests of one drafter, oldest evicted past `max_global_tokens`). Each holds the suffix
trie of SuffixDecoding *implicitly*: a trie node is a substring, its count the number of its
occurrences, its children the tokens that follow them. Occurrences are found through hash
chains over every position's last `min_match` tokens (zlib-style `head`/`prev` arrays), so
appending a token is O(1) and memory is O(tokens), not O(tokens x depth) as an explicit trie.

Drafting (as ArcticInference's SuffixDecoding): every suffix of the context, from one token
up to `max_match`, that occurs in a store gives a draft from its occurrences; the draft with
the highest score (sum of its nodes' path probabilities) wins, ties to the longer match. A
longer match predicts sharper but from fewer occurrences; a short one can win where the text
after it is consistent, which is why every length is scored rather than the longest match
alone (measured: docs/BENCHMARKS.md, "suffix against ArcticInference").

Probabilities: P(child | node) = occurrences of node followed by child / occurrences of node
that have a next token. An occurrence at the very end of a store (the context itself, in
the request store) has no next token and is left out, so it never dilutes the counts; equally
frequent children rank by recency, and in a tree equally probable nodes go shallower first
(see _expand). Three options count as ArcticInference does instead
(`count_ends`, `recent_first=False`, `split_response`): with them replays give ArcticInference's
τ at its settings, but they draft longer for much the same τ, and every draft token costs
verification, so they are off by default (measured: docs/BENCHMARKS.md, "suffix against
ArcticInference").

Cost: `begin` and `end` are linear in the tokens they add (eviction included), `observe` is
constant per token, and `propose` scans at most `max_visits` hash-chain entries per index, so
even a store where every position matches costs a bounded scan. The kernels are compiled by
numba once per environment and cached in __pycache__.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from numba import njit

from hvd.drafters.base import Capabilities, DecodeContext
from hvd.types import Draft, DraftFeatures

SEP = -1  # marks response boundaries in a store; never a token id


@dataclass(frozen=True)
class SuffixConfig:
    max_depth: int = 64  # matched suffix + draft depth, the trie depth of SuffixDecoding
    max_match: int = 32  # longest context suffix matched
    min_match: int = 1  # shortest context suffix matched (also the hash-chain key length)
    max_spec: int = 32  # most draft tokens
    min_prob: float = 0.1  # drop draft nodes whose path probability is below this
    tree: bool = False  # propose a best-first tree, not a chain of the most frequent tokens
    max_global_tokens: int = 200_000  # response tokens kept across requests; 0 disables
    # Draft at most spec_factor x match_length tokens (SuffixDecoding's alpha); 0 disables.
    # 2: a bare 2-token match drafts 4 tokens, a 16-token match the full 32. Every draft token
    # costs verification compute, and short matches rarely predict long continuations.
    spec_factor: float = 2.0
    max_visits: int = 8192  # hash-chain entries scanned per match, most recent first
    # Draft from every matched suffix length and keep the best score (as ArcticInference's
    # SuffixDecoding does); False: only from the longest match.
    all_lengths: bool = True
    # This request's output also in an index of its own, its drafts scored against those of
    # prompt + output (as ArcticInference also adds the active response to its global tree).
    split_response: bool = False
    # Occurrences with no next token (the context's own end, a response's last tokens) count in
    # a node's total, lowering its children's probabilities (as ArcticInference counts them);
    # False: left out.
    count_ends: bool = False
    # Among equally frequent continuations, the one seen most recently (False: the one that
    # reached that count first, as ArcticInference's count-ordered children do).
    recent_first: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_match <= self.max_match:
            raise ValueError("need 1 <= min_match <= max_match")


# ---------------------------------------------------------------- kernels (numba)


@njit(cache=True)
def _gram_hash(tokens, end, k, mask):
    """Hash of tokens[end-k:end] into [0, mask]."""
    h = 0
    for i in range(end - k, end):
        h = (h ^ (tokens[i] + 1)) * 0x5BD1E995  # wraps in int64
        h ^= h >> 15
    return h & mask


@njit(cache=True)
def _index_range(tokens, prev, head, k, lo, hi, base):
    """Chain positions lo..hi-1 under the hash of the k tokens ending there (none with SEP)."""
    mask = head.shape[0] - 1
    for p in range(lo, hi):
        prev[p] = -1
        if p - k + 1 < base:
            continue
        clean = True
        for i in range(p - k + 1, p + 1):
            if tokens[i] == SEP:
                clean = False
        if clean:
            h = _gram_hash(tokens, p + 1, k, mask)
            prev[p] = head[h]
            head[h] = p


@njit(cache=True)
def _matches(tokens, n, base, head, prev, tail, k, max_visits, ends):
    """(lengths, positions), each (m,): every occurrence in tokens[base:n] of a suffix of `tail`
    at least k long that has a next token (`ends`: or not), the position of its last token and
    the length of the longest suffix of `tail` ending there (capped at len(tail)); newest first."""
    c = tail.shape[0]
    pos = np.empty(max_visits, np.int64)  # (max_visits,)
    lens = np.empty(max_visits, np.int64)  # (max_visits,)
    m = 0
    if c < k:
        return lens[:0], pos[:0]
    p = head[_gram_hash(tail, c, k, head.shape[0] - 1)]
    visits = 0
    while p >= base and visits < max_visits:  # chains run newest to oldest
        visits += 1
        if ends or (p + 1 < n and tokens[p + 1] != SEP):
            length = 0
            while length < c and p - length >= base and tokens[p - length] == tail[c - 1 - length]:
                length += 1
            if length >= k:  # shorter: a hash collision
                lens[m], pos[m] = length, p
                m += 1
        p = prev[p]
    return lens[:m].copy(), pos[:m].copy()


@njit(cache=True)
def _group_order(keys):
    """A permutation of keys ((size,) int64) that makes equal keys contiguous, O(size):
    numbers the distinct keys through an open-addressing table, then counting-sorts."""
    size = keys.shape[0]
    mask = 1
    while mask < 2 * size:
        mask *= 2
    mask -= 1
    table = np.full(mask + 1, -1, np.int64)  # (2^b,) key slot -> index into uniq
    uniq = np.empty(size, np.int64)  # (distinct,) keys in order of first sight
    slot = np.empty(size, np.int64)  # (size,) index of each key in uniq
    start = np.zeros(size + 1, np.int64)  # (distinct+1,) counts, then output offsets
    nu = 0
    for i in range(size):
        h = ((keys[i] + 2) * 0x9E3779B1) & mask
        while table[h] >= 0 and uniq[table[h]] != keys[i]:
            h = (h + 1) & mask
        if table[h] < 0:
            table[h], uniq[nu] = nu, keys[i]
            nu += 1
        slot[i] = table[h]
        start[slot[i] + 1] += 1
    for j in range(nu):
        start[j + 1] += start[j]
    order = np.empty(size, np.int64)  # (size,)
    for i in range(size):
        order[start[slot[i]]] = i
        start[slot[i]] += 1
    return order


@njit(cache=True)
def _children(tokens, n, pos, lo, hi):
    """Group the occurrences pos[lo:hi] of one node by their next token, in place: afterwards
    child g owns pos[g_lo[g]:g_hi[g]], advanced to point at its token. Returns per child
    (token, lo, hi, most recent position), and how many occurrences have no next token."""
    size = hi - lo
    nxt = np.empty(size, np.int64)  # (size,) next token, SEP where none
    for i in range(size):
        q = pos[lo + i]
        nxt[i] = tokens[q + 1] if q + 1 < n else SEP
    order = _group_order(nxt)  # (size,)
    keys = np.empty(size, np.int64)  # (size,) next tokens, grouped
    moved = np.empty(size, np.int64)  # (size,) positions, grouped
    for i in range(size):
        keys[i], moved[i] = nxt[order[i]], pos[lo + order[i]] + 1
    for i in range(size):  # an element loop: slice assignment makes numba's compile far slower
        pos[lo + i] = moved[i]
    g_tok = np.empty(size, np.int64)  # (groups,) each of these four
    g_lo = np.empty(size, np.int64)
    g_hi = np.empty(size, np.int64)
    g_recent = np.empty(size, np.int64)
    g, i, ended = 0, 0, 0
    while i < size:
        j, recent = i, -1
        while j < size and keys[j] == keys[i]:
            recent = max(recent, pos[lo + j])
            j += 1
        if keys[i] != SEP:
            g_tok[g], g_lo[g], g_hi[g], g_recent[g] = keys[i], lo + i, lo + j, recent
            g += 1
        else:
            ended += j - i
        i = j
    return g_tok[:g], g_lo[:g], g_hi[:g], g_recent[:g], ended


@njit(cache=True)
def _child_probs(los, his, recents, prob, tree, ended, order):
    """Path probability of each child ((groups,) each), `ended` occurrences with no next token
    counted in the node's total; in chain mode -1 for all but the most frequent one (ties: the
    most recent with `order` 1, the one whose last occurrence came first with -1)."""
    g = los.shape[0]
    total, best = ended, 0
    for i in range(g):
        total += his[i] - los[i]
        more = his[i] - los[i] - (his[best] - los[best])
        if more > 0 or (more == 0 and order * recents[i] > order * recents[best]):
            best = i
    probs = np.empty(g, np.float64)  # (groups,)
    for i in range(g):
        probs[i] = prob * (his[i] - los[i]) / total if tree or i == best else -1.0
    return probs


@njit(cache=True)
def _expand(tokens, n, occ, max_nodes, max_depth, min_prob, tree, ends, order):
    """Best-first draft below the matched node whose occurrences end at `occ` (`ends`: those
    with no next token count in each node's total, as ArcticInference counts them).
    Returns (tokens, parents, path probabilities), each (d,), in topological order.

    Equal path probabilities go to the shallower node first (then by recency, as `order`):
    a path probability is a product of per-level estimates, each from the same few
    occurrences, and one from a single occurrence reads as a certain 1.0; at equal estimates
    the node with fewer such factors is the likelier, and the draft spreads over the
    alternatives near the root rather than running down one thin chain."""
    pos = occ.copy()  # (K,) node slices partition it; see _children
    out_tok = np.empty(max_nodes, np.int64)  # (max_nodes,)
    out_par = np.empty(max_nodes, np.int64)
    out_prob = np.empty(max_nodes, np.float64)
    cands = [(0, 0, 0, 0, 0)]  # (token, parent draft index, depth, lo, hi) of queued nodes
    cand_probs = [0.0]
    heap = [(0.0, 0, 0, 0)]  # (-path prob, depth, -recency, candidate)
    heapq.heappop(heap)
    node, depth, lo, hi, prob = -1, 0, 0, pos.shape[0], 1.0  # to expand next: the root
    d = 0
    while True:
        if depth < max_depth and d < max_nodes:
            toks, los, his, recents, ended = _children(tokens, n, pos, lo, hi)
            probs = _child_probs(los, his, recents, prob, tree, ended if ends else 0, order)
            for i in range(toks.shape[0]):
                if probs[i] >= min_prob:
                    cands.append((toks[i], node, depth + 1, los[i], his[i]))
                    cand_probs.append(probs[i])
                    heapq.heappush(heap, (-probs[i], depth + 1, -order * recents[i], len(cands) - 1))
        if len(heap) == 0 or d == max_nodes:
            break
        c = heapq.heappop(heap)[3]
        tok, parent, depth, lo, hi = cands[c]
        prob = cand_probs[c]
        out_tok[d], out_par[d], out_prob[d] = tok, parent, prob
        node = d
        d += 1
    return out_tok[:d], out_par[:d], out_prob[:d]


@njit(cache=True)
def _block_sum(a, lo, hi):
    """sum(a[lo:hi]) for hi - lo <= 128 in numpy's order: 8 accumulators, then the rest."""
    n = hi - lo
    if n < 8:
        res = 0.0
        for i in range(lo, hi):
            res += a[i]
        return res
    r = a[lo:lo + 8].copy()  # (8,)
    i = lo + 8
    while i < hi - n % 8:
        for j in range(8):
            r[j] += a[i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < hi:
        res += a[i]
        i += 1
    return res


@njit(cache=True)
def _pairwise_sum(a, lo, hi):
    """sum(a[lo:hi]) added in numpy's order (halves, each a multiple of 8 long, down to blocks
    of at most 128), so equal to `a[lo:hi].sum()` to the last bit: drafts are compared by it.
    The halving is walked with explicit stacks (a cached recursive numba function crashes)."""
    los, his, stage = np.empty(64, np.int64), np.empty(64, np.int64), np.zeros(64, np.int64)  # (64,) each
    vals = np.empty(64, np.float64)  # (64,) finished halves
    los[0], his[0], top, nv = lo, hi, 1, 0
    while top:
        l, h = los[top - 1], his[top - 1]
        half = (h - l) // 2
        half -= half % 8
        if h - l <= 128:
            vals[nv] = _block_sum(a, l, h)
            nv += 1
            top -= 1
        elif stage[top - 1] < 2:  # push the left half, then the right one
            stage[top - 1] += 1
            los[top] = l if stage[top - 1] == 1 else l + half
            his[top] = l + half if stage[top - 1] == 1 else h
            stage[top] = 0
            top += 1
        else:
            vals[nv - 2] += vals[nv - 1]
            nv -= 1
            top -= 1
    return vals[0]


@njit(cache=True)
def _spec_nodes(m, max_spec, spec_factor):
    """Draft tokens a length-m match may propose: max_spec, or with spec_factor > 0 at most
    spec_factor x m (at least 1)."""
    return max_spec if spec_factor <= 0 else min(max_spec, max(1, int(spec_factor * m)))


@njit(cache=True)
def _best_draft(tokens, n, base, head, prev, tail, k, max_visits, ends, depth, all_lengths, max_spec, spec_factor,
                trie_depth, min_match, min_prob, tree, order):
    """The best-scoring draft (score: its nodes' summed path probabilities) of one index, in
    one compiled call: from the longest matched suffix of `tail` that yields a draft, or (with
    `all_lengths`) from each matched length's occurrences, the highest score kept (ties: the
    longer match). A length-m match drafts at most max_spec tokens (spec_factor > 0: at most
    spec_factor x m, at least 1), no deeper than `depth` nor than trie_depth - m.
    Returns (tokens, parents, path probabilities, match length (0: no draft), occurrences of
    the matched suffix, score)."""
    lens, pos = _matches(tokens, n, base, head, prev, tail, k, max_visits, ends)
    lengths = np.unique(lens)[::-1]  # (u,) distinct match lengths, descending
    b_tok, b_par, b_prob = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    b_m, b_support, b_score = 0, 0, 0.0
    for i in range(lengths.shape[0]):
        if b_m and not all_lengths:
            break  # the longest match with a continuation (not the context's own end)
        top = lengths[i]
        occ = pos[lens >= top]  # every occurrence of the length-top suffix, newest first
        # every length in (next distinct length, top] has these same occurrences: draft from
        # the one whose draft may run deepest (the drafts nest: deeper holds shallower)
        low = lengths[i + 1] + 1 if i + 1 < lengths.shape[0] else min_match
        m, room = top, -1
        for cand in range(low if all_lengths else top, top + 1):
            r = min(depth, _spec_nodes(cand, max_spec, spec_factor), trie_depth - cand)
            if r >= room:
                m, room = cand, r
        if room <= 0:
            continue
        toks, parents, probs = _expand(tokens, n, occ, _spec_nodes(m, max_spec, spec_factor), room, min_prob, tree,
                                       ends, order)
        if toks.shape[0] == 0:
            continue
        score = _pairwise_sum(probs, 0, probs.shape[0])
        if b_m == 0 or score > b_score:
            b_tok, b_par, b_prob, b_m, b_support, b_score = toks, parents, probs, m, occ.shape[0], score
    return b_tok, b_par, b_prob, b_m, b_support, b_score


# ---------------------------------------------------------------- token store


def _pow2(x: int) -> int:
    return 1 << max(10, int(x - 1).bit_length())


class SuffixIndex:
    """Tokens with hash chains: an implicit suffix trie. Positions below `base` are evicted."""

    def __init__(self, k: int, capacity: int = 1024) -> None:
        self.k = k
        cap = _pow2(capacity)
        self.tokens = np.full(cap, SEP, np.int32)  # (cap,) token ids, SEP between responses
        self.prev = np.full(cap, -1, np.int64)  # (cap,) previous position with the same key hash
        self.head = np.full(cap, -1, np.int64)  # (cap,) newest position per key hash
        self.n = 0  # positions in use
        self.base = 0

    @property
    def live(self) -> int:
        """Positions held, separators included."""
        return self.n - self.base

    def append(self, seq: Sequence[int]) -> None:
        add = np.asarray(seq, dtype=np.int32)  # (a,)
        if self.n + len(add) > len(self.tokens):
            self._compact(len(add))
        self.tokens[self.n : self.n + len(add)] = add
        _index_range(self.tokens, self.prev, self.head, self.k, self.n, self.n + len(add), self.base)
        self.n += len(add)

    def evict_before(self, pos: int) -> None:
        self.base = max(self.base, min(pos, self.n))

    def _compact(self, extra: int) -> None:
        """Move the live positions to the front of arrays with room for twice them + extra."""
        live = self.tokens[self.base : self.n].copy()  # (live,)
        fresh = SuffixIndex(self.k, 2 * (len(live) + extra))
        fresh.tokens[: len(live)] = live
        _index_range(fresh.tokens, fresh.prev, fresh.head, self.k, 0, len(live), 0)
        self.tokens, self.prev, self.head = fresh.tokens, fresh.prev, fresh.head
        self.n, self.base = len(live), 0

    def matches(self, tail: np.ndarray, max_visits: int, ends: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(match length, last position) of every occurrence of a suffix of tail ((c,) int32)
        at least k long, newest first (see _matches)."""
        return _matches(self.tokens, self.n, self.base, self.head, self.prev, tail, self.k, max_visits, ends)

    def match(self, tail: np.ndarray, max_visits: int) -> tuple[int, np.ndarray]:
        """Longest matched suffix length of tail ((c,) int32) and its occurrences' last positions."""
        lens, pos = self.matches(tail, max_visits)
        if len(lens) == 0:
            return 0, pos
        best = int(lens.max())
        return best, pos[lens == best]

    def expand(
        self, occ: np.ndarray, max_nodes: int, max_depth: int, min_prob: float, tree: bool, ends: bool = False,
        recent_first: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _expand(self.tokens, self.n, occ, max_nodes, max_depth, min_prob, tree, ends, 1 if recent_first else -1)


# ---------------------------------------------------------------- drafter


class ResponseStore:
    """Earlier responses, each after a SEP, in one suffix index: the cross-request knowledge of
    the suffix arm. One store may be shared by several drafters (an engine's `suffix`, `hvd`
    and `rule-hybrid` read and feed the same one); bounded by `max_tokens` response tokens,
    oldest responses evicted first (the index compacts what it evicts)."""

    def __init__(self, min_match: int, max_tokens: int) -> None:
        self.min_match, self.max_tokens = min_match, max_tokens
        self.clear()

    def clear(self) -> None:
        """Forget every response."""
        self.index: Optional[SuffixIndex] = None  # None before the first response
        self._responses: deque[int] = deque()  # lengths of the kept responses, oldest first
        self.tokens = 0  # sum of _responses (separators not counted)

    @property
    def responses(self) -> int:
        return len(self._responses)

    def add(self, output: Sequence[int]) -> None:
        limit = self.max_tokens
        response = list(output)[-limit:] if limit > 0 else []
        if not response:
            return
        if self.index is None:
            self.index = SuffixIndex(self.min_match, 4 * (len(response) + 1))  # grows
        self.index.append([SEP, *response])
        self._responses.append(len(response))
        self.tokens += len(response)
        while self.tokens > limit:
            dropped = self._responses.popleft()
            self.tokens -= dropped
            self.index.evict_before(self.index.base + 1 + dropped)


class SuffixDrafter:
    name = "suffix"
    capabilities = Capabilities()

    def __init__(self, config: SuffixConfig = SuffixConfig(), store: Optional[ResponseStore] = None) -> None:
        """`store`: a shared store of earlier responses (default: a private one)."""
        self.config = config
        self._local: Optional[SuffixIndex] = None  # this request: prompt + committed output
        self._response: Optional[SuffixIndex] = None  # split_response: this request's committed output
        self.store = store if store is not None else ResponseStore(config.min_match, config.max_global_tokens)
        if self.store.min_match != config.min_match:
            raise ValueError("a shared response store must use the drafter's min_match")

    @property
    def global_tokens(self) -> int:
        """Response tokens held by the global store (separators not counted)."""
        return self.store.tokens

    def for_request(self) -> "SuffixDrafter":
        return SuffixDrafter(self.config, self.store)

    def begin(self, prompt: Sequence[int]) -> None:
        self._local = SuffixIndex(self.config.min_match, len(prompt) + 1024)
        self._local.append(prompt)
        self._response = SuffixIndex(self.config.min_match, 1024) if self.config.split_response else None

    def observe(self, committed: Sequence[int]) -> None:
        if self._local is None:
            self.begin(())
        self._local.append(committed)
        if self._response is not None:
            self._response.append(committed)

    def end(self, output: Sequence[int]) -> None:
        self.store.add(output)

    def propose(self, ctx: DecodeContext) -> Draft:
        cfg = self.config
        depth = min(ctx.max_draft, cfg.max_spec)
        if depth <= 0 or len(ctx.tokens) < cfg.min_match:
            return Draft.empty()
        tail = np.asarray(ctx.tokens[-cfg.max_match :], dtype=np.int32)  # (c,)
        best, source = None, 0
        for s, index in ((0, self._local), (0, self._response), (1, self.store.index)):
            found = None if index is None else self._draft(index, tail, depth)
            if found is not None and found[3] and (best is None or found[5] > best[5]):
                best, source = found, s
        if best is None:
            return Draft.empty()
        toks, parents, _, m, support, score = best
        features = DraftFeatures(score=score, match_length=float(m), source_global=float(source),
                                 support=float(support), draft_length=float(len(toks)))
        return Draft(tuple(toks.tolist()), tuple(parents.tolist()), features)

    def _draft(self, index: SuffixIndex, tail: np.ndarray, depth: int) -> tuple:
        """The best-scoring draft of this index (see `_best_draft`), as (tokens, parents, path
        probabilities, match length (0: none), occurrences, score)."""
        cfg = self.config
        return _best_draft(index.tokens, index.n, index.base, index.head, index.prev, tail, index.k, cfg.max_visits,
                           cfg.count_ends, depth, cfg.all_lengths, cfg.max_spec, cfg.spec_factor, cfg.max_depth,
                           cfg.min_match, cfg.min_prob, cfg.tree, 1 if cfg.recent_first else -1)
