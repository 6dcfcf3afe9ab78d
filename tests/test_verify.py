"""Lossless sampling: committed tokens are distributed exactly as plain sampling's."""
import pytest
import torch

from hvd.types import Draft
from hvd.verify import SamplingParams, target_probs, verify_greedy, verify_sampling

from conftest import ScriptedDrafter
from stats_util import goodness_of_fit, two_sample

V = 8
LOGITS = torch.tensor([2.0, 1.5, 0.3, -1.0, 0.9, 0.0, -0.5, 1.2])
PARAMS = [SamplingParams(1.0), SamplingParams(0.7, top_k=5), SamplingParams(1.3, top_p=0.8)]


def first_token(logits, draft, params, gen) -> int:
    path, bonus = verify_sampling(logits, draft, params, gen)
    return draft.tokens[path[0]] if path else bonus


def draw(make_draft, params, trials=12000, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V)
    for _ in range(trials):
        draft = make_draft(gen)
        logits = torch.randn(1 + len(draft), V, generator=gen)
        logits[0] = LOGITS
        counts[first_token(logits, draft, params, gen)] += 1
    return counts


def deterministic_tree(gen):
    return Draft((0, 3, 1, 5, 2), (-1, 0, -1, 2, -1))  # root children: 0, 1, 2


def sampled_siblings(gen):
    q = torch.softmax(torch.tensor([0.0, 2.0, 1.0, 0.5, 0.0, -1.0, 0.3, 0.0]), -1)
    toks = torch.multinomial(q, 3, replacement=True, generator=gen).tolist()  # i.i.d. from q
    return Draft(tuple(toks), (-1, -1, -1), probs=q.expand(3, V).clone())


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("make", [deterministic_tree, sampled_siblings])
def test_first_committed_token_follows_target(params, make):
    counts = draw(make, params)
    assert goodness_of_fit(counts, target_probs(LOGITS, params)) > 1e-3


def test_the_check_detects_a_biased_verifier(monkeypatch):
    """Negative control: a verifier that always accepts a likely draft token must fail the check."""
    import hvd.verify as verify

    real = verify.verify_sampling

    def greedy_biased(logits, draft, params, gen):
        path, bonus = real(logits, draft, params, gen)
        return ([0], bonus) if not path and target_probs(logits[0], params)[draft.tokens[0]] > 0.2 else (path, bonus)

    monkeypatch.setattr(verify, "verify_sampling", greedy_biased)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(V)
    for _ in range(12000):
        d = deterministic_tree(gen)
        logits = torch.randn(1 + len(d), V, generator=gen)
        logits[0] = LOGITS
        path, bonus = verify.verify_sampling(logits, d, PARAMS[0], gen)
        counts[d.tokens[path[0]] if path else bonus] += 1
    assert goodness_of_fit(counts, target_probs(LOGITS, PARAMS[0])) < 1e-6


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
