"""Lossless sampling: committed tokens are distributed exactly as plain sampling's, and with a
seed they are the very tokens plain sampling draws, whatever was drafted."""
import pytest
import torch

from hvd.types import Draft
from hvd.verify import KeyedSampler, SamplingParams, target_probs, verify_greedy, verify_keyed

from conftest import ScriptedDrafter
from stats_util import goodness_of_fit, two_sample

V = 8
LOGITS = torch.tensor([2.0, 1.5, 0.3, -1.0, 0.9, 0.0, -0.5, 1.2])
PARAMS = [SamplingParams(1.0), SamplingParams(0.7, top_k=5), SamplingParams(1.3, top_p=0.8)]


def first_token(logits, draft, params, seed) -> int:
    path, bonus = verify_keyed(logits, draft, KeyedSampler(params, seed), 5)
    return draft.tokens[path[0]] if path else bonus


def draw(make_draft, params, trials=6000, verify=None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(V)
    for seed in range(trials):
        draft = make_draft(gen)
        logits = torch.randn(1 + len(draft), V, generator=gen)
        logits[0] = LOGITS
        counts[(verify or first_token)(logits, draft, params, seed)] += 1
    return counts


def deterministic_tree(gen):
    return Draft((0, 3, 1, 5, 2), (-1, 0, -1, 2, -1))  # root children: 0, 1, 2


def random_siblings(gen):
    return Draft(tuple(torch.randint(0, V, (3,), generator=gen).tolist()), (-1, -1, -1))


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("make", [deterministic_tree, random_siblings])
def test_first_committed_token_follows_target(params, make):
    counts = draw(make, params)
    assert goodness_of_fit(counts, target_probs(LOGITS, params)) > 1e-3


def test_the_check_detects_a_biased_verifier():
    """Negative control: a verifier that accepts a likely first draft token it should have
    rejected must fail the check."""
    def biased(logits, draft, params, seed):
        path, bonus = verify_keyed(logits, draft, KeyedSampler(params, seed), 5)
        if not path and target_probs(logits[0], params)[draft.tokens[0]] > 0.2:
            return draft.tokens[0]
        return draft.tokens[path[0]] if path else bonus

    counts = draw(deterministic_tree, PARAMS[0], verify=biased)
    assert goodness_of_fit(counts, target_probs(LOGITS, PARAMS[0])) < 1e-6


def test_keyed_draws_do_not_depend_on_the_draft():
    """Whatever the tree, each committed token is the keyed draw at its position."""
    gen = torch.Generator().manual_seed(1)
    for seed in range(200):
        logits = torch.randn(4, V, generator=gen)
        logits[1:] = logits[0]  # every row the same distribution: the keyed draw per position is fixed
        sample = KeyedSampler(PARAMS[0], seed)
        want = [sample(logits[0], 9 + d) for d in range(4)]
        chain = Draft.chain(want[:2] + [(want[2] + 1) % V])
        path, bonus = verify_keyed(logits, chain, sample, 9)
        assert [chain.tokens[i] for i in path] + [bonus] == want[:3]


def test_greedy_walks_the_argmax_path():
    logits = torch.full((6, V), -5.0)
    logits[0, 4] = logits[2, 6] = logits[4, 2] = logits[3, 1] = 0.0  # rows: root, node 1, node 3, node 2
    draft = Draft((3, 4, 7, 6, 1), (-1, -1, 1, 1, 1))
    assert verify_greedy(logits, draft) == ([1, 3], 2)  # root->4 (node 1) ->6 (node 3), bonus argmax row 4


@pytest.mark.slow
def test_engine_sampling_matches_ar_distribution(any_engine):
    """End to end on the tiny model (each target): per-position token marginals of spec vs ar over many seeds."""
    prompt, n, seeds = [40, 41, 42, 40, 41, 42, 40, 41], 4, 1200
    kw = dict(max_new_tokens=n, temperature=0.9, top_k=20)
    ref = any_engine.generate(prompt, method="ar", max_new_tokens=n).token_ids

    def marginals(**extra):
        counts = torch.zeros(n, 65)
        for s in range(seeds):
            ids = any_engine.generate(prompt, seed=s, **kw, **extra).token_ids
            for i, t in enumerate(ids):
                counts[i, t] += 1
        return counts

    ar = marginals(method="ar")
    for drafter in (ScriptedDrafter("random", seed=3, size=6), ScriptedDrafter("right", ref)):
        spec = marginals(drafter=drafter)
        for i in range(n):
            assert two_sample(ar[i], spec[i]) > 1e-3, (drafter.name, i)


@pytest.mark.parametrize("method", ["pld", "suffix", "aded"])
def test_a_seed_gives_ar_s_sampled_tokens_for_every_method(any_engine, method):
    prompt = [40, 41, 42, 40, 41, 42, 40, 41, 42, 40]
    kw = dict(max_new_tokens=24, temperature=0.8, top_p=0.95)
    for seed in range(5):
        want = any_engine.generate(prompt, method="ar", seed=seed, **kw).token_ids
        assert any_engine.generate(prompt, method=method, seed=seed, **kw).token_ids == want
        drafter = ScriptedDrafter("random", seed=seed, size=6)
        assert any_engine.generate(prompt, drafter=drafter, seed=seed, **kw).token_ids == want


def test_argmax_rows_is_torch_argmax_ties_included():
    """The fast row argmax picks what torch.argmax picks: the first index of the maximum,
    on random rows, rows of ties and a row whose maximum repeats; other dtypes go through torch."""
    from hvd.verify import argmax_rows

    torch.manual_seed(0)
    x = torch.randn(17, 4099)
    x[3] = 0.5  # all equal: index 0
    x[5, 10] = x[5, 20] = x[5].max() + 1  # a repeated maximum: the first
    x = torch.round(x * 4) / 4  # many ties everywhere
    assert argmax_rows(x) == x.argmax(dim=-1).tolist()
    assert argmax_rows(x.to(torch.bfloat16)) == x.to(torch.bfloat16).argmax(dim=-1).tolist()
