"""The lean Llama target: matches transformers in fp32; in bf16 every token's logits are
bitwise the same however its forward is grouped (alone, in a chain, in a tree)."""
import random

import pytest
import torch

from hvd.targets.lean import BLOCK, LlamaTarget
from hvd.targets.check import check_exact
from hvd.targets.hf import HFTarget
from hvd.targets.skip_draft import SkipDraft
from hvd.types import Draft

from conftest import VOCAB, decode_one_by_one, paths_of, tiny_llama


@pytest.fixture(scope="module")
def lean_bf16():
    return LlamaTarget(tiny_llama(seed=3).to(torch.bfloat16))


def seq(n: int) -> list[int]:
    return [i % (VOCAB - 1) + 1 for i in range(n)]


def random_tree(rng: random.Random, n: int) -> Draft:
    parents = [rng.randint(-1, i - 1) for i in range(n)]
    return Draft(tuple(rng.randrange(VOCAB) for _ in range(n)), tuple(parents))


def test_fp32_matches_transformers():
    model = tiny_llama(seed=1)
    hf, lean = HFTarget(model), LlamaTarget(model)
    prompt = seq(69)
    assert torch.allclose(hf.prefill(prompt), lean.prefill(prompt), atol=1e-4)
    tree = Draft((5, 6, 7, 8), (-1, 0, -1, 2))
    assert torch.allclose(hf.verify(3, tree), lean.verify(3, tree), atol=1e-4)
    hf.commit([2, 3])
    lean.commit([2, 3])
    chain = Draft.chain([9, 10, 11])
    assert torch.allclose(hf.verify(12, chain), lean.verify(12, chain), atol=1e-4)


@pytest.mark.parametrize("prompt_len", [5, BLOCK - 4, BLOCK, 2 * BLOCK - 1])
def test_bf16_tree_logits_are_bitwise_plain_decoding(lean_bf16, prompt_len):
    rng = random.Random(prompt_len)
    prompt = [rng.randrange(1, VOCAB) for _ in range(prompt_len)]
    for _ in range(3):
        draft = random_tree(rng, rng.randint(1, 40))
        root = rng.randrange(VOCAB)
        lean_bf16.prefill(prompt)
        got = lean_bf16.verify(root, draft)  # (1 + n, vocab)
        for i, path in enumerate(paths_of(draft)):
            want = decode_one_by_one(lean_bf16, prompt, [root, *path])  # (depth + 1, vocab)
            assert torch.equal(got[i + 1], want[-1]), f"node {i} differs from plain decoding"
        assert torch.equal(got[0], decode_one_by_one(lean_bf16, prompt, [root])[0])


def test_bf16_commit_keeps_the_accepted_branch(lean_bf16):
    prompt = seq(59)
    draft = Draft((4, 5, 6, 7, 8), (-1, -1, 1, 2, 0))  # branches: 4-8 and 5-6-7
    lean_bf16.prefill(prompt)
    lean_bf16.verify(3, draft)
    lean_bf16.commit([1, 2])  # keep 5, 6
    assert lean_bf16.cached_len == len(prompt) + 3
    after = lean_bf16.verify(9, Draft.chain([10, 11]))
    want = decode_one_by_one(lean_bf16, prompt, [3, 5, 6, 9, 10, 11])[3:]
    assert torch.equal(after, want)


def test_bf16_prefix_reuse_and_hidden_states(lean_bf16, monkeypatch):
    from dataclasses import replace

    from hvd.targets import lean as llama

    monkeypatch.setattr(llama, "PREFILL_CHUNK", 16)
    lean_bf16.config = replace(lean_bf16.config, reuse_prefix=True)
    lean_bf16.set_hidden_layers((0, 1))
    try:
        lean_bf16.prefill(seq(39))
        lean_bf16.verify(5, Draft.chain([6, 7]))
        lean_bf16.commit([0])
        h = lean_bf16.hidden()
        assert set(h) == {0, 1} and h[0].shape == (41, 32)
        emb = lean_bf16.shared_weights().embedding
        assert torch.equal(h[0][39], emb[5]) and torch.equal(h[0][40], emb[6])  # layer 0 = embeddings
        logits = lean_bf16.prefill(seq(49))  # shares 39 tokens with the cache: keeps 32, recomputes 2 chunks
        fresh = LlamaTarget(tiny_llama(seed=3).to(torch.bfloat16))  # the same weights
        assert torch.equal(logits, fresh.prefill(seq(49)))  # rounds as a fresh prefill does
    finally:
        lean_bf16.config = replace(lean_bf16.config, reuse_prefix=False)
        lean_bf16.set_hidden_layers(())


def test_self_check_passes_in_bf16(lean_bf16):
    assert check_exact(lean_bf16, prefill=False) is None


def test_layer_skip_draft_over_the_lean_cache(lean_bf16):
    prompt = seq(29)
    lean_bf16.prefill(prompt)
    drafter = SkipDraft(lean_bf16, skip=())  # no layer skipped: the target's own greedy tokens
    tokens = drafter.draft(prompt + [3], 4)
    want = []
    lean_bf16.prefill(prompt)
    t = 3
    for _ in range(4):
        t = int(lean_bf16.verify(t, Draft.empty())[0].argmax())
        lean_bf16.commit([])
        want.append(t)
    assert tokens == want


@pytest.mark.slow
def test_dtype_choice_and_fallback(monkeypatch, tmp_path):
    """auto falls back to float32 when this machine fails the invariance check; bfloat16 then
    refuses with one clear error; the verdict is cached per machine."""
    from hvd.engine import Engine
    from hvd.errors import ModelError
    from hvd.targets import check, select

    monkeypatch.setenv("HVD_CACHE", str(tmp_path))  # a fresh cache (the model converts again: ~10 s)
    monkeypatch.setattr(select, "cpu_has_bf16_units", lambda: True)
    monkeypatch.setattr(check, "check_exact", lambda target, prefill=True: "a chain verify's logits differ")
    assert isinstance(Engine.load(dtype="auto").target, HFTarget)  # int8, then bfloat16 refused here
    with pytest.raises(ModelError, match="would not be exact on this machine"):
        Engine.load(dtype="bfloat16")
    assert "differ" in (tmp_path / "batch_invariance.json").read_text()
    with pytest.raises(ModelError, match="unknown dtype"):
        Engine.load(dtype="float16")
