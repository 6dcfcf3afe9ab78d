"""The exact int8 target: every token's logits are bitwise the same however its forward is
grouped (alone, in a chain of any length up to the largest verify, in a tree, in a prefill
chunk, across cache groups and blocks), and it stays close to the float model."""
import random

import pytest
import torch

from hvd.targets.check import check_exact, row_counts
from hvd.targets.exact import PREFILL_CHUNK, ExactLlamaTarget, QuantLinear
from hvd.targets.native import library, ptr
from hvd.targets.hf import HFTarget
from hvd.targets.protocol import TargetConfig
from hvd.types import Draft

from conftest import VOCAB, decode_one_by_one, paths_of, tiny_llama


@pytest.fixture(scope="module")
def exact():
    return ExactLlamaTarget(tiny_llama(seed=3))


def seq(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, VOCAB) for _ in range(n)]


@pytest.mark.parametrize("prompt_len", [1, 5, 7, 8, 9, 60, 63, 64, 65, 127])
def test_chain_logits_are_bitwise_plain_decoding_for_every_row_count(exact, prompt_len):
    prompt, cont = seq(prompt_len), seq(exact.max_draft_nodes + 1, seed=1)
    want = decode_one_by_one(exact, prompt, cont)
    for n in row_counts(exact.max_draft_nodes + 1):
        exact.prefill(prompt)
        got = exact.verify(cont[0], Draft.chain(cont[1:n]))
        assert torch.equal(got, want[:n]), n


@pytest.mark.parametrize("prompt_len", [3, 62, 64, 130])
def test_tree_logits_are_bitwise_plain_decoding(exact, prompt_len):
    rng = random.Random(prompt_len)
    prompt = seq(prompt_len)
    for n in (1, 5, 17, 40, exact.max_draft_nodes):
        tree = Draft(tuple(rng.randrange(VOCAB) for _ in range(n)), tuple(rng.randint(-1, i - 1) for i in range(n)))
        exact.prefill(prompt)
        got = exact.verify(2, tree)
        assert torch.equal(got[0], decode_one_by_one(exact, prompt, [2])[0])
        for i, path in enumerate(paths_of(tree)):
            assert torch.equal(got[i + 1], decode_one_by_one(exact, prompt, [2] + path)[-1]), (n, i)


def test_branch_commit_then_decoding_matches(exact):
    prompt = seq(61)
    tree = Draft((4, 7, 5, 9, 6), (-1, -1, 0, 1, 2))
    exact.prefill(prompt)
    exact.verify(3, tree)
    exact.commit([1, 3])  # 7 -> 9
    got = exact.verify(8, Draft.chain([10, 11]))
    want = decode_one_by_one(exact, prompt, [3, 7, 9, 8, 10, 11])[3:]
    assert torch.equal(got, want)


def test_prefill_is_plain_decoding_across_chunks(exact):
    ids = seq(PREFILL_CHUNK + 40)
    want = decode_one_by_one(exact, ids[:3], ids[3:])[-1]
    assert torch.equal(exact.prefill(ids), want)


def test_prefix_reuse_keeps_any_prefix_and_changes_no_bit():
    target = ExactLlamaTarget(tiny_llama(seed=3), TargetConfig(reuse_prefix=True))
    a, b = seq(90), seq(90)[:70] + seq(30, seed=5)
    target.prefill(a)
    got = target.prefill(b)
    assert target._reusable(b + [1]) > 0 and torch.equal(got, ExactLlamaTarget(tiny_llama(seed=3)).prefill(b))


def test_self_check_passes(exact):
    assert check_exact(exact) is None


def test_close_to_the_float_model():
    model = tiny_llama(seed=1)
    hf, ex = HFTarget(model), ExactLlamaTarget(model)
    prompt = seq(50)
    ref, got = hf.prefill(prompt), ex.prefill(prompt)
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=0)
    assert cos > 0.98, cos


def test_int8_linear_is_exact_integer_arithmetic():
    torch.manual_seed(0)
    lib = library()
    dense = torch.randn(37, 48)
    w = QuantLinear.of(dense)  # 37 rows: a partial tile
    assert ((w.dense().float() * w.scale[:, None] - dense).abs() <= w.scale[:, None] / 2 + 1e-7).all()
    for T in (1, 2, 3, 4, 7):
        x = torch.randint(-127, 128, (T, 48), dtype=torch.int16)
        xs = torch.rand(T) + 0.1
        y = torch.empty(T, 37)
        lib.hvd_linear(ptr(x), ptr(xs), T, 48, ptr(w.q), ptr(w.scale), 37, ptr(y), 0)
        sums = x.long() @ w.dense().long().t()  # exact integer sums
        assert torch.equal(y, (sums.float() * xs[:, None]) * w.scale[None, :])


def test_threads_do_not_change_a_bit(exact):
    prompt, cont = seq(70), seq(20, seed=2)
    exact.set_threads(1)
    one = (exact.prefill(prompt), exact.verify(cont[0], Draft.chain(cont[1:])))
    exact.set_threads(2)
    two = (exact.prefill(prompt), exact.verify(cont[0], Draft.chain(cont[1:])))
    exact.set_threads(torch.get_num_threads())
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
