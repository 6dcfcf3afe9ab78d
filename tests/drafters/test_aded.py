"""ADED: tri-gram datastore, online adaptation, MCTS draft trees, lossless decoding with them."""
import random

import numpy as np
import pytest
import torch

from hvd import methods
from hvd.drafters import trigram
from hvd.drafters.adaptive_trigrams import AdaptiveTrigrams
from hvd.drafters.aded import AdedConfig, AdedDrafter
from hvd.drafters.base import DecodeContext, Drafter
from hvd.drafters.trigram import TrigramTable, count_trigrams
from hvd.cost.curve import VerifyCost

from conftest import VOCAB
from stats_util import two_sample


CPU_LIKE = VerifyCost((0, 8, 16, 32, 64), (0.065, 0.085, 0.110, 0.150, 0.230))  # seconds per verify, as measured here
FLAT = VerifyCost((0, 64), (1.0, 1.0))
STEEP = VerifyCost((0, 64), (1.0, 65.0))


def ctx(tokens, max_draft=32) -> DecodeContext:
    return DecodeContext(list(tokens), len(tokens), max_draft)


def random_table(seed=0, vocab=30, length=3000) -> TrigramTable:
    rng = random.Random(seed)
    seq = [rng.randrange(vocab) for _ in range(length)]
    return count_trigrams([seq, seq[:500]], vocab)


def node_paths(draft):
    paths = []
    for t, p in zip(draft.tokens, draft.parents):
        paths.append((paths[p] if p >= 0 else ()) + (t,))
    return paths


# ---- datastore -------------------------------------------------------------------------------


def test_counts_normalise_per_bigram():
    t = count_trigrams([[1, 2, 3, 1, 2, 3, 1, 2, 4], [1, 2, 3]], 10)
    assert t.successors(1, 2) == pytest.approx({3: 3 / 4, 4: 1 / 4})
    assert list(t.successors(1, 2)) == [3, 4]  # most probable first
    assert t.successors(2, 3) == {1: 1.0} and t.successors(4, 4) == {}
    assert t.n_bigrams == 3 and np.all(np.diff(t.keys) > 0)


def test_top_12_successors_of_the_full_distribution():
    seq = []
    for c in range(14):  # (5, 6) followed by c, c + 1 times: 14 successors, 105 occurrences
        seq += [5, 6, 20 + c] * (c + 1)
    t = count_trigrams([seq], 40)
    succ = t.successors(5, 6)
    assert sorted(succ) == list(range(22, 34))  # the two rarest dropped
    assert succ[33] == pytest.approx(14 / 105) and succ[22] == pytest.approx(3 / 105)
    assert sum(succ.values()) < 1  # weights stay P(c | a, b) of the full count


def test_ties_break_by_token_and_short_sequences_are_skipped():
    t = count_trigrams([[1, 2, 9, 1, 2, 7], [3, 4]], 10, top_k=1)
    assert t.successors(1, 2) == {7: pytest.approx(0.5)}
    assert count_trigrams([[1, 2]], 10).n_entries == 0
    with pytest.raises(ValueError):
        count_trigrams([[1, 2, 10]], 10)


def test_save_load_roundtrip(tmp_path):
    t = random_table()
    t = TrigramTable(t.vocab, t.keys, t.offsets, t.succ, t.weight, {"tokenizer": "x", "note": "a=b"})
    trigram.save(t, tmp_path / "t.npz")
    back = trigram.load(tmp_path / "t.npz")
    assert back.vocab == t.vocab and back.meta == t.meta
    for name in ("keys", "offsets", "succ", "weight"):
        assert np.array_equal(getattr(back, name), getattr(t, name))
        assert getattr(back, name).dtype == getattr(t, name).dtype


# ---- online adaptation -------------------------------------------------------------------------


def test_adapt_adds_caps_and_creates():
    table = count_trigrams([[1, 2, 3, 1, 2, 4]], 10)
    ad = AdaptiveTrigrams(table)
    ad.adapt([1, 2, 3], 0.04, 3.0)
    assert ad.successors(1, 2) == pytest.approx({3: 0.54, 4: 0.5})
    ad.adapt([1, 2, 5, 7], 0.04, 3.0)  # (1,2)->5 new beside static ones, (2,5)->7 a new bigram
    assert ad.successors(1, 2) == pytest.approx({3: 0.54, 4: 0.5, 5: 0.04})
    assert ad.successors(2, 5) == pytest.approx({7: 0.04})
    for _ in range(100):
        ad.adapt([1, 2, 3, 2, 5, 7], 0.04, 3.0)
    assert ad.successors(1, 2)[3] == pytest.approx(3.0) and ad.successors(2, 5)[7] == pytest.approx(3.0)
    assert table.successors(1, 2) == pytest.approx({3: 0.5, 4: 0.5})  # the built table is untouched
    ad.reset()
    assert ad.successors(1, 2) == pytest.approx({3: 0.5, 4: 0.5}) and ad.successors(2, 5) == {}


def test_overlay_grows_and_keeps_entries():
    ad = AdaptiveTrigrams(TrigramTable.empty(1000), overlay_slots=16)
    rng = random.Random(0)
    seqs = [[rng.randrange(1000) for _ in range(16)] for _ in range(200)]
    for s in seqs:
        ad.adapt(s, 0.04, 3.0)
    expect: dict[tuple[int, int], dict[int, float]] = {}
    for s in seqs:
        for a, b, c in zip(s, s[1:], s[2:]):
            expect.setdefault((a, b), {}).setdefault(c, 0.0)
            expect[(a, b)][c] = min(expect[(a, b)][c] + 0.04, 3.0)
    assert ad.ov_keys.shape[0] > 16
    for (a, b), succ in expect.items():
        assert ad.successors(a, b) == pytest.approx(succ)


def test_observe_reinforces_the_last_16_tokens():
    d = AdedDrafter(AdedConfig(), TrigramTable.empty(100))
    prompt = list(range(20, 40))
    d.begin(prompt)
    d.observe([40])
    window = (prompt + [40])[-16:]
    assert d.trigrams.successors(window[0], window[1]) == pytest.approx({window[2]: 0.04})
    assert d.trigrams.successors(20, 21) == {}  # outside the window
    d.observe([41])
    assert d.trigrams.successors(window[1], window[2]) == pytest.approx({window[3]: 0.08})
    frozen = AdedDrafter(AdedConfig(adapt=False), TrigramTable.empty(100))
    frozen.begin(prompt)
    frozen.observe([40])
    assert frozen.trigrams.overlay_used == 0


def test_adaptation_kept_across_requests_unless_reset():
    for reset, expect in ((False, 0.08), (True, 0.04)):
        d = AdedDrafter(AdedConfig(reset_per_request=reset), TrigramTable.empty(100))
        for _ in range(2):
            d.begin([1, 2])
            d.observe([3])
        assert d.trigrams.successors(1, 2) == pytest.approx({3: expect})


# ---- MCTS draft trees --------------------------------------------------------------------------


def test_mcts_tree_is_valid_and_follows_the_trigrams():
    table = random_table()
    d = AdedDrafter(AdedConfig(), table)
    d.begin([1, 2])
    draft = d.propose(ctx([1, 2]))
    assert 1 < len(draft) <= 64 and draft.max_depth() > 1
    assert len(set(zip(draft.parents, draft.tokens))) == len(draft)  # siblings are distinct
    for path in node_paths(draft):
        full = (1, 2) + path
        assert full[-1] in table.successors(full[-3], full[-2])


def test_mcts_is_deterministic_with_a_seed_and_respects_limits():
    table = random_table(1)
    runs = [AdedDrafter(AdedConfig(seed=7), table) for _ in range(2)]
    for r in runs:
        r.begin([3, 4])
    assert runs[0].propose(ctx([3, 4])) == runs[1].propose(ctx([3, 4]))
    small = AdedDrafter(AdedConfig(max_nodes=10, paths=30), table)
    small.begin([3, 4])
    assert len(small.propose(ctx([3, 4]))) == 10
    assert small.propose(ctx([3, 4], max_draft=2)).max_depth() <= 2
    assert small.propose(ctx([3, 4], max_draft=0)) == small.propose(ctx([3, 4, 99], max_draft=0))


def test_mcts_prefers_the_likely_branch():
    seq = [1, 2, 3, 4, 5, 6] * 9 + [1, 2, 7, 8, 9, 6]  # after (1, 2): 3 nine times, 7 once
    d = AdedDrafter(AdedConfig(adapt=False), count_trigrams([seq], 10))
    d.begin([1, 2])
    draft = d.propose(ctx([1, 2]))
    assert (3, 4, 5, 6, 1) in node_paths(draft)  # the long likely path, extended by one token
    assert draft.tokens[0] == 3


def test_empty_table_gives_empty_drafts_then_learns():
    d = AdedDrafter(AdedConfig(), TrigramTable.empty(100))
    d.begin([5, 6, 7, 5, 6])
    assert len(d.propose(ctx([5, 6]))) == 0
    d.observe([7])
    assert d.propose(ctx([5, 6, 7, 5, 6])).tokens[:1] == (7,)


def test_greedy_ablation_is_the_heaviest_chain():
    seq = [1, 2, 3, 4, 5] * 3 + [1, 2, 9]
    d = AdedDrafter(AdedConfig(greedy=True, greedy_depth=4, adapt=False), count_trigrams([seq], 10))
    d.begin([1, 2])
    draft = d.propose(ctx([1, 2]))
    assert draft.tokens == (3, 4, 5, 1) and draft.parents == (-1, 0, 1, 2)


def test_time_budget_stops_early():
    d = AdedDrafter(AdedConfig(iterations=10_000, chunk=10, time_budget_s=1e-9), random_table())
    d.begin([1, 2])
    assert d.propose(ctx([1, 2])).features.iterations == 10


def test_is_a_drafter_and_registered():
    d = AdedDrafter()
    assert isinstance(d, Drafter)
    for name in ("aded", "aded-noadapt", "aded-greedy"):
        assert methods.get(name).make is not None


# ---- cost-aware sizing ------------------------------------------------------------------------


def test_cost_curve_sizes_the_tree():
    table = random_table(3)
    sizes = {}
    for label, cost in (("none", None), ("flat", FLAT), ("cpu", CPU_LIKE), ("steep", STEEP)):
        d = AdedDrafter(AdedConfig(), table, cost=cost)
        d.begin([1, 2])
        draft = d.propose(ctx([1, 2]))
        sizes[label] = len(draft)
        if len(draft):
            assert draft.features.candidates >= len(draft)
    assert sizes["none"] == sizes["flat"] > sizes["cpu"] >= sizes["steep"] == 0


def test_sizing_keeps_the_most_probable_rooted_subtree():
    seq = [1, 2, 3, 4, 5, 6] * 9 + [1, 2, 7, 8, 9, 6]
    d = AdedDrafter(AdedConfig(adapt=False), count_trigrams([seq], 10), cost=CPU_LIKE)
    d.begin([1, 2])
    full = AdedDrafter(AdedConfig(adapt=False), count_trigrams([seq], 10))
    full.begin([1, 2])
    draft, cand = d.propose(ctx([1, 2])), full.propose(ctx([1, 2]))
    assert 0 < len(draft) < len(cand)
    assert node_paths(draft)[0] == (3,) and set(node_paths(draft)) <= set(node_paths(cand))


def test_observe_calibrates_from_the_committed_tokens():
    seq = [1, 2, 3, 4, 5, 6] * 9 + [1, 2, 7, 8, 9, 6]
    d = AdedDrafter(AdedConfig(adapt=False), count_trigrams([seq], 10), cost=CPU_LIKE)
    d.begin([1, 2])
    first = d.propose(ctx([1, 2]))
    tested, accepted = d.sizer.calibrator.tested.sum(), d.sizer.calibrator.accepted.sum()
    d.observe([3, 4, 5])  # the likely path: accepted nodes at depths 1 and 2, the rest rejected
    assert d.sizer.calibrator.tested.sum() > tested + 2 and d.sizer.calibrator.accepted.sum() == pytest.approx(accepted + 3)
    for _ in range(30):  # the target never follows: drafts shrink to nothing
        d.begin([1, 2])
        d.propose(ctx([1, 2]))
        d.observe([9])
    assert len(d.propose(ctx([1, 2]))) < len(first)
    d.observe([])  # nothing committed: nothing to count, no error


# ---- decoding with aded trees (tiny model) -----------------------------------------------------

PROMPTS = [[3, 8, 1, 22, 9, 14], [40, 41, 42, 40, 41, 42, 40, 41]]


@pytest.fixture(scope="module")
def warm_table(tiny_engine):
    """Tri-grams of the tiny model's own greedy outputs: drafts that often get accepted."""
    outs = [tiny_engine.generate(p, method="ar", max_new_tokens=48).token_ids for p in PROMPTS + [list(range(1, 20))]]
    return count_trigrams([p + o for p, o in zip(PROMPTS + [list(range(1, 20))], outs)], VOCAB)


@pytest.mark.parametrize("config,cost", [(AdedConfig(), None), (AdedConfig(adapt=False), None), (AdedConfig(greedy=True), None),
                                         (AdedConfig(max_nodes=5), None), (AdedConfig(), CPU_LIKE),
                                         (AdedConfig(greedy=True), CPU_LIKE)])
def test_greedy_output_identical_to_ar(tiny_engine, warm_table, config, cost):
    taus = []
    for prompt in PROMPTS:
        ref = tiny_engine.generate(prompt, method="ar", max_new_tokens=40).token_ids
        for table in (warm_table, random_table(2, VOCAB)):
            res = tiny_engine.generate(prompt, max_new_tokens=40, drafter=AdedDrafter(config, table, cost=cost))
            assert res.token_ids == ref
            taus.append(res.stats.mean_accepted_length)
    assert max(taus) > 2


def test_sampling_distribution_with_aded_trees(tiny_engine, warm_table):
    """Per-position token marginals with aded trees match plain sampling (chi-square)."""
    prompt, n, seeds = PROMPTS[1], 3, 800
    kw = dict(max_new_tokens=n, temperature=0.9, top_k=20)
    drafter = AdedDrafter(AdedConfig(iterations=40), warm_table)
    counts = {m: torch.zeros(n, VOCAB) for m in ("ar", "aded")}
    accepted = 0
    for s in range(seeds):
        for m in counts:
            res = tiny_engine.generate(prompt, seed=s, method="ar", **kw) if m == "ar" else \
                tiny_engine.generate(prompt, seed=s, drafter=drafter, **kw)
            for i, t in enumerate(res.token_ids):
                counts[m][i, t] += 1
            if m == "aded":
                accepted += sum(st.accepted for st in res.stats.steps)
    assert accepted > seeds // 4  # the trees were used, not just proposed
    for i in range(n):
        assert two_sample(counts["ar"][i], counts["aded"][i]) > 1e-3, i


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_aded_options():
    from hvd.cli import build_parser, main
    from hvd.cli.args import aded_changes

    a = build_parser().parse_args(["generate", "x", "--method", "aded", "--aded-iterations", "50",
                                   "--aded-no-adapt", "--aded-time-budget-ms", "5"])
    assert aded_changes(a) == {"iterations": 50, "adapt": False, "time_budget_s": 0.005}
    assert main(["generate", "x", "--method", "pld", "--aded-greedy"]) == 2
    assert main(["generate", "x", "--method", "aded", "--aded-paths", "0"]) == 2
    assert main(["datastore", "build", "--limit", "0"]) == 2


# ---- real default model ------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_greedy_identical_to_ar():
    from hvd import Engine

    engine = Engine.load()
    for prompt in ("Write a Python function that reverses a string.", "List three uses of a hash map."):
        ids = engine.encode(prompt)
        ref = engine.generate(ids, method="ar", max_new_tokens=32).token_ids
        for method in ("aded", "aded-greedy"):
            drafter = methods.get(method).make(engine.target)
            res = engine.generate(ids, max_new_tokens=32, drafter=drafter)
            assert res.token_ids == ref, method
            assert max(st.draft_len for st in res.stats.steps) <= 64
