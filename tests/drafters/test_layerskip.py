"""layerskip: greedy output token-identical to ar; the draft model is the target minus some layers."""
import pytest
import torch

from hvd.drafters.layerskip import LayerSkipConfig, default_skip, for_target
from hvd.engine import Engine
from hvd.targets.hf import HFTarget
from hvd.targets.skip_draft import SkipDraft

from conftest import tiny_llama

PROMPTS = [[3, 8, 1, 22, 9, 14], list(range(1, 30))]


@pytest.mark.parametrize("skip", [(), (0,), (1,), None])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_matches_ar(tiny_engine, prompt, skip):
    ref = tiny_engine.generate(prompt, method="ar", max_new_tokens=40).token_ids
    drafter = for_target(tiny_engine.target, LayerSkipConfig(k=4, skip=skip))
    got = tiny_engine.generate(prompt, max_new_tokens=40, drafter=drafter)
    assert got.token_ids == ref
    if skip == ():  # no layer skipped: the draft is the target itself
        assert got.stats.mean_accepted_length > 4


def test_cache_is_back_to_the_committed_length_after_drafting():
    target = HFTarget(tiny_llama())
    target.prefill(PROMPTS[0])
    before = [layer.keys.clone() for layer in target._cache.layers]
    SkipDraft(target, (1,)).draft(PROMPTS[0] + [5], 5)
    for b, layer in zip(before, target._cache.layers):
        assert torch.equal(b, layer.keys)


def test_default_skip_keeps_the_outer_quarters():
    assert default_skip(30) == (12, 15, 18, 21)
    assert default_skip(2) == ()


@pytest.mark.slow
def test_real_model_greedy_matches_ar():
    engine = Engine.load()
    drafter = for_target(engine.target)
    for prompt in ("Write a haiku about the sea.", "def fib(n):"):
        ids = engine.encode(prompt)
        ref = engine.generate(ids, method="ar", max_new_tokens=24).token_ids
        assert engine.generate(ids, max_new_tokens=24, drafter=drafter).token_ids == ref
