import torch

from hvd.targets.hf import GQA_SDPA, HFTarget, tree_attention_mask
from hvd.types import Draft

from conftest import tiny_llama

PROMPT = [5, 9, 3, 17, 22, 8, 1, 30]


def chain_logits(model, tokens):
    """Reference: a fresh full forward over `tokens`; (len, vocab) logits."""
    with torch.inference_mode():
        return model(torch.tensor([tokens])).logits[0]


def test_tree_forward_matches_each_branch_as_a_chain():
    model = tiny_llama()
    target = HFTarget(model)
    target.prefill(PROMPT)
    root = 11
    #          0   1   2   3   4
    draft = Draft((4, 7, 9, 2, 6), (-1, 0, -1, 2, 1))  # branches: 4-7-6 and 9-2
    logits = target.verify(root, draft)  # (1+5, vocab)
    for branch in ([0, 1, 4], [2, 3]):
        seq = PROMPT + [root] + [draft.tokens[i] for i in branch]
        ref = chain_logits(model, seq)[len(PROMPT):]
        got = logits[[0] + [i + 1 for i in branch]]
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_grouped_heads_attend_through_gqa_sdpa_as_through_transformers_own():
    """The target shares grouped key/value heads inside torch's kernel (`gqa_sdpa`); chains and
    trees give transformers' own sdpa logits (a model with 2 key/value heads for 4 query heads)."""
    own = tiny_llama()
    target = HFTarget(tiny_llama())
    assert target._model.config._attn_implementation == GQA_SDPA and own.config._attn_implementation == "sdpa"
    target.prefill(PROMPT)
    draft = Draft((4, 7, 9, 2, 6), (-1, 0, -1, 2, 1))
    logits = target.verify(11, draft)
    for branch in ([0, 1, 4], [2, 3]):
        ref = chain_logits(own, PROMPT + [11] + [draft.tokens[i] for i in branch])[len(PROMPT):]
        torch.testing.assert_close(logits[[0] + [i + 1 for i in branch]], ref, atol=1e-5, rtol=1e-5)
    target.commit([])
    chain = target.verify(12, Draft.chain([3, 8, 1]))
    ref = chain_logits(own, PROMPT + [11, 12, 3, 8, 1])[len(PROMPT) + 1:]
    torch.testing.assert_close(chain, ref, atol=1e-5, rtol=1e-5)


def test_commit_compacts_cache_to_the_accepted_path():
    model = tiny_llama()
    target = HFTarget(model)
    target.prefill(PROMPT)
    draft = Draft((4, 7, 9, 2, 6), (-1, 0, -1, 2, 1))
    target.verify(11, draft)
    target.commit([2, 3])  # keep root, 9, 2
    assert target.cached_len == len(PROMPT) + 3
    nxt = target.verify(13, Draft.chain([5]))
    ref = chain_logits(model, PROMPT + [11, 9, 2, 13, 5])[-2:]
    torch.testing.assert_close(nxt, ref, atol=1e-4, rtol=1e-4)


def test_chain_rollback_after_rejection():
    model = tiny_llama()
    target = HFTarget(model)
    target.prefill(PROMPT)
    target.verify(11, Draft.chain([1, 2, 3, 4]))
    target.commit([0])  # keep root and 1 only
    assert target.cached_len == len(PROMPT) + 2
    nxt = target.verify(6, Draft.empty())
    torch.testing.assert_close(nxt[0], chain_logits(model, PROMPT + [11, 1, 6])[-1], atol=1e-4, rtol=1e-4)


def test_hidden_states_follow_the_accepted_path():
    from hvd.targets.protocol import TargetConfig

    model = tiny_llama()
    target = HFTarget(model, TargetConfig(hidden_layers=(0, 2)))
    target.prefill(PROMPT)
    target.verify(11, Draft((4, 7, 9), (-1, 0, -1)))
    target.commit([2])
    h = target.hidden()
    assert h[2].shape == (len(PROMPT) + 2, 32)
    with torch.inference_mode():
        ref = model(torch.tensor([PROMPT + [11, 9]]), output_hidden_states=True).hidden_states[2][0]
    torch.testing.assert_close(h[2], ref, atol=1e-4, rtol=1e-4)


def test_tree_mask_shape_and_visibility():
    m = tree_attention_mask((-1, 0, -1), past=2, dtype=torch.float32)[0, 0]
    assert m.shape == (4, 6)
    visible = (m == 0).int().tolist()
    assert visible == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 1]]


def test_prefix_reuse_keeps_logits_and_greedy_output():
    from hvd.engine import Engine
    from hvd.targets.hf import HFTarget
    from hvd.targets.protocol import TargetConfig

    from conftest import char_tokenizer, tiny_llama

    model = tiny_llama()
    plain = Engine(HFTarget(model), char_tokenizer())
    reuse = Engine(HFTarget(model, TargetConfig(reuse_prefix=True)), char_tokenizer())
    plain.eos_ids = reuse.eos_ids = frozenset()
    a, b = [3, 8, 1, 22, 9, 14, 5], [3, 8, 1, 22, 30, 31]
    for i, ids in enumerate((a, a, b, a + [7, 7])):  # same prompt, a shared prefix, an extension of a finished request
        assert (reuse.target._reusable(ids) > 0) == (i > 0)  # something was cached and is kept
        want = plain.target.prefill(ids)
        got = reuse.target.prefill(ids)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert reuse.target.cached_len == len(ids)
        assert (reuse.generate(ids, method="suffix", max_new_tokens=12).token_ids
                == plain.generate(ids, method="ar", max_new_tokens=12).token_ids)
