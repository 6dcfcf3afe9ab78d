import random
from collections import Counter
from typing import Sequence

import numpy as np
import pytest

from hvd.drafters.base import DecodeContext, Drafter
from hvd.drafters.suffix import SuffixConfig, SuffixDrafter, SuffixIndex

# No pruning, the longest match only: drafts show the raw counts of one node.
EXACT = dict(min_prob=0.0, spec_factor=0.0, all_lengths=False)


def ctx(tokens: Sequence[int], max_draft: int = 32) -> DecodeContext:
    return DecodeContext(list(tokens), len(tokens), max_draft)


def drafter(prompt: Sequence[int] = (), **config) -> SuffixDrafter:
    d = SuffixDrafter(SuffixConfig(**config))
    d.begin(prompt)
    return d


def tree_probs(seq: Sequence[int], tail: Sequence[int], **limits) -> dict[tuple[int, ...], float]:
    """Path (tokens from the root) -> path probability of each node of a tree-mode expansion."""
    index = SuffixIndex(2)
    index.append(seq)
    m, occ = index.match(np.asarray(tail, np.int32), 1000)
    assert m > 0
    toks, parents, probs = index.expand(occ, limits.get("nodes", 64), limits.get("depth", 8), limits.get("min_prob", 0.0), True)
    paths: list[tuple[int, ...]] = []
    for t, p in zip(toks.tolist(), parents.tolist()):
        paths.append((paths[p] if p >= 0 else ()) + (t,))
    return dict(zip(paths, probs.tolist()))


def reference(segments: Sequence[Sequence[int]], tail: Sequence[int], min_m: int, max_m: int, ends: bool = False):
    """Brute force: (longest match with a continuation, Counter of next tokens, most recent
    position per token); `ends`: occurrences with no next token count too, under None."""
    tail = list(tail)[-max_m:]
    found: list[tuple[int, int, object]] = []  # (length, order of position, next token or None)
    order = 0
    for seg in segments:
        for p in range(len(seg) - (0 if ends else 1)):
            n = 0
            while n < len(tail) and n <= p and seg[p - n] == tail[-1 - n]:
                n += 1
            found.append((n, order, seg[p + 1] if p + 1 < len(seg) else None))
            order += 1
    best = max((n for n, _, t in found if n >= min_m and t is not None), default=0)
    hits = [(o, t) for n, o, t in found if n >= best and best > 0]
    recent = {t: o for o, t in sorted(hits)}
    return best, Counter(t for _, t in hits), recent


ARCTIC = dict(count_ends=True, recent_first=False, split_response=True)  # ArcticInference's counting
SEMANTICS = [({}, False, 1), (ARCTIC, True, -1)]  # (config, ends counted, recency sign in ties)


def top_token(counts: Counter, recent: dict, sign: int) -> int:
    """The most frequent next token; ties to the most recent (sign 1) or the one whose last
    occurrence came first (-1: it reached that count first)."""
    return max((t for t in counts if t is not None), key=lambda t: (counts[t], sign * recent[t]))


def test_is_a_drafter():
    d = SuffixDrafter()
    assert isinstance(d, Drafter) and d.name == "suffix"


def test_exact_counts():
    a, b, c, d = 1, 2, 3, 4
    seq = [a, b, c, a, b, d, a, b, c, a, b]  # "a b" followed by c, d, c; the last has no next
    probs = tree_probs(seq, [a, b], depth=2)
    assert probs == pytest.approx({(c,): 2 / 3, (c, a): 2 / 3, (d,): 1 / 3, (d, a): 1 / 3})


def test_the_context_itself_does_not_dilute_counts_unless_asked():
    assert tree_probs([5, 6, 5, 6], [5, 6]) == {(5,): 1.0, (5, 6): 1.0}
    dr = drafter([5, 6, 5, 6], **EXACT).propose(ctx([5, 6, 5, 6]))
    assert dr.tokens == (5, 6) and dr.features.score == 2.0 and dr.features.support == 1.0
    # counted as ArcticInference counts: "5 6" occurs twice, once with no next token
    dr = drafter([5, 6, 5, 6], **EXACT, count_ends=True).propose(ctx([5, 6, 5, 6]))
    assert dr.tokens == (5, 6) and dr.features.score == pytest.approx(1.0) and dr.features.support == 2.0


def test_equally_frequent_continuations_rank_by_who_got_there_first():
    seq = [1, 7, 1, 8, 1]  # "1" is followed by 7, then by 8: one each
    assert drafter(seq, **EXACT).propose(ctx(seq, 1)).tokens == (8,)  # the most recent
    assert drafter(seq, **EXACT, recent_first=False).propose(ctx(seq, 1)).tokens == (7,)  # reached its count first


def test_equally_probable_tree_nodes_go_shallower_first():
    seq = [9, 1, 7, 5, 6, 9, 1, 8, 3, 4, 9, 1]  # "9 1" -> 7 5 6 once, 8 3 4 once: all 0.5
    tree = dict(EXACT, tree=True)
    for extra in ({}, dict(recent_first=False)):
        dr = drafter(seq, **tree, **extra, max_spec=2).propose(ctx(seq))
        assert sorted(dr.tokens) == [7, 8] and dr.parents == (-1, -1)  # both branches, not one chain
    dr = drafter(seq, **tree, max_spec=4).propose(ctx(seq))
    assert dr.tokens == (8, 7, 3, 5) and dr.parents == (-1, -1, 0, 1)  # each level: most recent first
    dr = drafter(seq, **tree, max_spec=4, recent_first=False).propose(ctx(seq))
    assert dr.tokens == (7, 8, 5, 3) and dr.parents == (-1, -1, 0, 1)


def test_longest_match_wins():
    seq = [9, 1, 2, 8, 9, 1, 2, 8, 3, 1, 2, 7, 0, 3, 1, 2]
    dr = drafter(seq, **EXACT).propose(ctx(seq, 1))
    assert dr.tokens == (7,) and dr.features.match_length == 3.0
    dr = drafter(seq, max_match=2, **EXACT).propose(ctx(seq, 1))  # "1 2": 8 twice, 7 once
    assert dr.tokens == (8,) and dr.features.score == pytest.approx(2 / 3)
    assert dr.features.support == 3.0
    dr = drafter(seq, max_match=2, **EXACT, count_ends=True).propose(ctx(seq, 1))  # and the end once
    assert dr.tokens == (8,) and dr.features.score == pytest.approx(2 / 4) and dr.features.support == 4.0


def test_min_prob_stops_paths():
    seq = [1, 2, 3, 5, 10, 1, 2, 3, 6, 11, 1, 2, 3, 5, 12, 1, 2, 4, 13, 1, 2]
    # "1 2" -> 3 (3/4) | 4 (1/4); "1 2 3" -> 5 (2/3) | 6 (1/3)
    assert drafter(seq, min_prob=0.6, spec_factor=0).propose(ctx(seq)).tokens == (3,)
    assert drafter(seq, min_prob=0.5, spec_factor=0).propose(ctx(seq)).tokens[:2] == (3, 5)
    probs = tree_probs(seq, [13, 1, 2], depth=2, min_prob=0.25)
    assert probs == pytest.approx({(3,): 0.75, (4,): 0.25, (3, 5): 0.5, (3, 6): 0.25, (4, 13): 0.25})


def test_limits():
    seq = list(range(40)) + list(range(10))
    assert len(drafter(seq, **EXACT).propose(ctx(seq, 3))) == 3
    assert len(drafter(seq, **EXACT).propose(ctx(seq, 0))) == 0
    assert len(drafter(seq, max_spec=5, **EXACT).propose(ctx(seq))) == 5
    assert len(drafter(seq, max_depth=14, **EXACT).propose(ctx(seq))) == 4  # 10 matched + 4
    assert len(drafter(seq[-5:] + seq, min_prob=0.0, spec_factor=1.5).propose(ctx(seq[-5:] + seq))) == 15
    short = [7, 8, 7, 8, 7, 8, 9, 7, 8]
    dr = drafter(short, max_match=2, min_prob=0.0, spec_factor=2.0).propose(ctx(short))
    assert dr.features.match_length == 2.0 and len(dr) == 4


def test_empty_and_short_contexts():
    d = SuffixDrafter()
    assert len(d.propose(ctx([5, 6, 5, 6]))) == 0  # before begin
    d.observe([1, 2, 3, 1, 2])  # observe without begin
    assert d.propose(ctx([1, 2, 3, 1, 2])).tokens[0] == 3
    d.begin([])
    assert len(d.propose(ctx([]))) == 0 and len(d.propose(ctx([1]))) == 0
    d.begin([4])
    assert len(d.propose(ctx([4]))) == 0
    d.end([])


def test_observe_extends_the_request():
    d = drafter([1, 2, 3, 4, 5], **EXACT)
    d.observe([9, 9])
    d.observe([1])
    d.observe([2])
    assert d.propose(ctx([1, 2, 3, 4, 5, 9, 9, 1, 2])).tokens == (3, 4, 5, 9, 9, 1, 2)


def test_tree_mode_is_a_valid_tree():
    rng = random.Random(1)
    for _ in range(50):
        seq = [rng.randrange(4) for _ in range(rng.randrange(2, 200))]
        budget = rng.randrange(1, 9)
        d = drafter(seq, tree=True, min_prob=0.02, max_spec=20)
        dr = d.propose(ctx(seq, budget))  # Draft itself checks parents precede children
        edges = list(zip(dr.parents, dr.tokens))
        assert len(set(edges)) == len(edges)  # no duplicate siblings
        assert dr.max_depth() <= budget and len(dr) <= 20
        if len(dr):
            assert dr.features.draft_length == len(dr)
            assert 0 < dr.features.score <= len(dr) + 1e-9


def test_tree_probabilities_shrink_along_paths():
    rng = random.Random(2)
    seq = [rng.randrange(3) for _ in range(300)]
    probs = tree_probs(seq, seq[-6:], nodes=40, depth=6)
    for path, p in probs.items():
        assert 0 < p <= 1
        if len(path) > 1:
            assert p <= probs[path[:-1]] + 1e-12
        children = [q for other, q in probs.items() if other[:-1] == path]
        assert sum(children) <= p + 1e-9


@pytest.mark.parametrize("config,ends,sign", SEMANTICS)
def test_chain_matches_brute_force(config, ends, sign):
    rng = random.Random(3)
    for _ in range(300):
        vocab, n = rng.randrange(2, 6), rng.randrange(1, 80)
        seq = [rng.randrange(vocab) for _ in range(n)]
        min_m = rng.randrange(1, 4)
        max_m = rng.randrange(min_m, 8)
        dr = drafter(seq, min_match=min_m, max_match=max_m, max_spec=1, **EXACT, **config).propose(ctx(seq))
        best, counts, recent = reference([seq], seq, min_m, max_m, ends)
        if best == 0:
            assert len(dr) == 0
            continue
        top = top_token(counts, recent, sign)
        assert dr.tokens == (top,)
        assert dr.features.match_length == best and dr.features.support == sum(counts.values())
        assert dr.features.score == pytest.approx(counts[top] / sum(counts.values()))


def test_long_sequences_match_brute_force():  # a hash table with collisions
    rng = random.Random(4)
    seq = [rng.randrange(40) for _ in range(3000)]
    d = drafter(seq, max_spec=1, **EXACT)
    for cut in range(2000, 3000, 50):
        tail = seq[:cut]
        best, counts, recent = reference([seq], tail, 1, 32)
        dr = d.propose(ctx(tail))
        assert dr.features.match_length == best
        if best:
            assert counts[dr.tokens[0]] == max(counts.values())


@pytest.mark.parametrize("config,ends,sign", SEMANTICS)
def test_every_match_length_scored_matches_brute_force(config, ends, sign):
    """all_lengths: each matched length's occurrences give a draft; the best score wins, ties
    to the longer match."""
    rng = random.Random(7)
    for _ in range(300):
        vocab, n = rng.randrange(2, 5), rng.randrange(1, 80)
        seq = [rng.randrange(vocab) for _ in range(n)]
        dr = drafter(seq, max_spec=1, min_prob=0.0, spec_factor=0.0, **config).propose(ctx(seq))
        best_len, _, _ = reference([seq], seq, 1, 32, ends)
        if best_len == 0:
            assert len(dr) == 0
            continue
        scored = []
        for m in range(best_len, 0, -1):
            counts, recent = _at_least(seq, m, ends)
            top = top_token(counts, recent, sign)
            scored.append((counts[top] / sum(counts.values()), m, top))
        score, m, top = max(scored, key=lambda x: (x[0], x[1]))
        assert dr.features.score == pytest.approx(score) and dr.tokens == (top,)


def _at_least(seq, m, ends=False):
    """Occurrences of the last m tokens of seq (`ends`: also those with no next token, under
    None): (next-token counts, most recent position per token)."""
    hits = [(p, seq[p + 1] if p + 1 < len(seq) else None) for p in range(len(seq) - (0 if ends else 1))
            if p + 1 >= m and seq[p - m + 1 : p + 1] == seq[-m:]]
    return Counter(t for _, t in hits), {t: p for p, t in hits}


def test_global_tree_learns_across_requests():
    d = drafter([1, 2, 3])
    d.end([50, 40, 41, 42, 43, 44, 45])
    d.begin([7, 8, 9, 40, 41])
    dr = d.propose(ctx([7, 8, 9, 40, 41]))
    assert dr.tokens[:3] == (42, 43, 44) and dr.features.source_global == 1.0
    d.end([1, 2, 3, 1, 2])
    d.begin([1, 2, 3, 1, 2])  # both stores draft 3 1 2: the request store wins ties
    dr = d.propose(ctx([1, 2, 3, 1, 2]))
    assert dr.tokens == (3, 1, 2) and dr.features.source_global == 0.0


@pytest.mark.parametrize("config,ends,sign", SEMANTICS)
def test_global_matches_brute_force_and_never_crosses_responses(config, ends, sign):
    rng = random.Random(5)
    for _ in range(100):
        responses = [[rng.randrange(3) for _ in range(rng.randrange(0, 12))] for _ in range(rng.randrange(1, 6))]
        d = drafter([], max_spec=1, **EXACT, **config)
        for r in responses:
            d.end(r)
        d.begin([])
        tail = [rng.randrange(3) for _ in range(rng.randrange(0, 6))]
        dr = d.propose(ctx(tail))
        best, counts, recent = reference(responses, tail, 1, 32, ends)
        assert dr.features.match_length == best
        if best:
            assert dr.tokens[0] == top_token(counts, recent, sign)


def test_eviction_bounds_the_global_store():
    rng = random.Random(6)
    d = drafter([], max_global_tokens=2000)
    first = list(range(1000, 1100))
    d.end(first)
    for _ in range(300):
        d.end([rng.randrange(500) for _ in range(rng.randrange(1, 150))])
        assert d.global_tokens <= 2000
        assert d.store.index.live <= 2000 + 2000  # plus at most one separator per response
        assert len(d.store.index.tokens) <= 8 * 2000
    last = [rng.randrange(500) for _ in range(60)] + [2000, 2001, 2002, 2003]
    d.end(last)
    d.begin([])
    assert len(d.propose(ctx(first[:10]))) == 0  # evicted long ago
    assert d.propose(ctx([2000, 2001])).tokens[:2] == (2002, 2003)


def test_eviction_of_a_response_longer_than_the_store():
    d = drafter([], max_global_tokens=10)
    d.end(list(range(100, 130)))
    assert d.global_tokens == 10
    d.begin([])
    assert d.propose(ctx([125, 126])).tokens[0] == 127
    assert len(d.propose(ctx([105, 106]))) == 0
    assert len(drafter([], max_global_tokens=0).propose(ctx([1, 2]))) == 0


def test_evicted_responses_are_not_matched_before_compaction():
    d = drafter([], max_global_tokens=10)
    d.end([1, 2, 3, 4, 5, 6, 7, 8])
    d.end([20, 21, 22, 23, 24, 25, 26, 27])  # 16 > 10: the first response goes
    assert d.global_tokens == 8 and d.store.index.base > 0  # evicted, still in the arrays
    d.begin([])
    assert len(d.propose(ctx([1, 2]))) == 0
    assert d.propose(ctx([21, 22])).tokens[0] == 23


def test_a_long_match_drafts_as_deep_as_a_shorter_one_with_the_same_occurrences():
    """A 50-token match leaves 64 - 50 = 14 tokens of trie depth; every length down to the next
    distinct one has the same single occurrence, so the draft comes from the one that leaves
    room for the full 32 (the drafts nest: the deeper holds the shallower)."""
    seq = list(range(100, 150)) + list(range(200, 240)) + list(range(100, 150))
    d = drafter(seq, max_match=63, max_depth=64, min_prob=0.0)
    draft = d.propose(ctx(seq))
    assert list(draft.tokens) == list(range(200, 232)) and draft.features.match_length == 32


def test_draft_scores_are_summed_in_numpys_order():
    """The compiled draft search compares drafts by their summed path probabilities, added as
    numpy adds them (pairwise): the score feature is bit-identical to `probs.sum()`."""
    from hvd.drafters.suffix import _pairwise_sum

    rng = np.random.default_rng(0)
    for n in range(300):
        a = rng.random(n) * rng.choice([1e-3, 1.0, 1e3], n)
        assert _pairwise_sum(a, 0, n) == float(a.sum()), n
