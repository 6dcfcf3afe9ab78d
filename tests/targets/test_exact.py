"""The exact int8 target: every token's logits are bitwise the same however its forward is
grouped (alone, in a chain of any length up to the largest verify, in a tree, in a prefill
chunk, across cache groups and blocks), and it stays close to the float model."""
import random

import pytest
import torch

from hvd.targets.check import check_exact, row_counts
from hvd.targets.exact import PREFILL_CHUNK, ExactLlamaTarget, QuantLinear
from hvd.targets.native import library, ptr, use_integer_path
from hvd.targets.hf import HFTarget
from hvd.targets.protocol import TargetConfig
from hvd.types import Draft

from conftest import VOCAB, decode_one_by_one, paths_of, random_ids, tiny_llama


@pytest.mark.parametrize("prompt_len", [1, 5, 7, 8, 9, 60, 63, 64, 65, 127])
def test_chain_logits_are_bitwise_plain_decoding_for_every_row_count(exact, prompt_len):
    prompt, cont = random_ids(prompt_len), random_ids(exact.max_draft_nodes + 1, seed=1)
    want = decode_one_by_one(exact, prompt, cont)
    for n in row_counts(exact.max_draft_nodes + 1):
        exact.prefill(prompt)
        got = exact.verify(cont[0], Draft.chain(cont[1:n]))
        assert torch.equal(got, want[:n]), n


@pytest.mark.parametrize("prompt_len", [3, 62, 64, 130])
def test_tree_logits_are_bitwise_plain_decoding(exact, prompt_len):
    rng = random.Random(prompt_len)
    prompt = random_ids(prompt_len)
    for n in (1, 5, 17, 40, exact.max_draft_nodes):
        tree = Draft(tuple(rng.randrange(VOCAB) for _ in range(n)), tuple(rng.randint(-1, i - 1) for i in range(n)))
        exact.prefill(prompt)
        got = exact.verify(2, tree)
        assert torch.equal(got[0], decode_one_by_one(exact, prompt, [2])[0])
        for i, path in enumerate(paths_of(tree)):
            assert torch.equal(got[i + 1], decode_one_by_one(exact, prompt, [2] + path)[-1]), (n, i)


def test_branch_commit_then_decoding_matches(exact):
    prompt = random_ids(61)
    tree = Draft((4, 7, 5, 9, 6), (-1, -1, 0, 1, 2))
    exact.prefill(prompt)
    exact.verify(3, tree)
    exact.commit([1, 3])  # 7 -> 9
    got = exact.verify(8, Draft.chain([10, 11]))
    want = decode_one_by_one(exact, prompt, [3, 7, 9, 8, 10, 11])[3:]
    assert torch.equal(got, want)


def test_prefill_is_plain_decoding_across_chunks(exact):
    ids = random_ids(PREFILL_CHUNK + 40)
    want = decode_one_by_one(exact, ids[:3], ids[3:])[-1]
    assert torch.equal(exact.prefill(ids), want)


def test_prefix_reuse_keeps_any_prefix_and_changes_no_bit():
    target = ExactLlamaTarget(tiny_llama(seed=3), TargetConfig(reuse_prefix=True))
    a, b = random_ids(90), random_ids(90)[:70] + random_ids(30, seed=5)
    target.prefill(a)
    got = target.prefill(b)
    assert target._reusable(b + [1]) > 0 and torch.equal(got, ExactLlamaTarget(tiny_llama(seed=3)).prefill(b))


def test_self_check_passes(exact):
    assert check_exact(exact) is None


def test_close_to_the_float_model():
    model = tiny_llama(seed=1)
    hf, ex = HFTarget(model), ExactLlamaTarget(model)
    prompt = random_ids(50)
    ref, got = hf.prefill(prompt), ex.prefill(prompt)
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=0)
    assert cos > 0.98, cos


@pytest.fixture
def integer_paths():
    """Every integer path this CPU runs (AVX2 always; AVX-512 VNNI where present); restores auto."""
    lib = library()
    paths = ["avx2"] + (["avx512-vnni"] if use_integer_path("auto", lib) == "avx512-vnni" else [])
    yield paths
    use_integer_path("auto", lib)


@pytest.mark.parametrize("group", [4, 16])
def test_int8_linear_is_exact_integer_arithmetic(group, integer_paths):
    """Every path and layout gives the exact integer sums, so no bit depends on the CPU's ISA;
    extreme activations (all +127 / -127) and weights probe the VNNI path's unsigned offset."""
    torch.manual_seed(0)
    lib = library()
    for n, k in ((37, 48), (70, 1040)):  # partial tiles and groups; K with an odd number of chunks
        dense = torch.randn(n, k)
        dense[0] = dense[0].abs().max()  # a row of +127
        dense[1] = -dense[1].abs().max()  # a row of -127
        w = QuantLinear.of(dense, group)
        assert w.group == group
        assert ((w.dense().float() * w.scale[:, None] - dense).abs() <= w.scale[:, None] / 2 + 1e-7).all()
        for T in (1, 2, 3, 4, 5, 6, 7, 11, 17):
            x = torch.randint(-127, 128, (T, k), dtype=torch.int16)
            x[0] = 127
            if T > 1:
                x[1] = -127
            xs = torch.rand(T) + 0.1
            sums = x.long() @ w.dense().long().t()  # exact integer sums
            for path in integer_paths:
                use_integer_path(path, lib)
                y = torch.empty(T, n)
                lib.hvd_linear(ptr(x), ptr(xs), T, k, ptr(w.q), ptr(w.scale), n, ptr(y), 0, group)
                assert torch.equal(y, (sums.float() * xs[:, None]) * w.scale[None, :]), (path, n, k, T)


def test_threads_do_not_change_a_bit(exact):
    prompt, cont = random_ids(70), random_ids(20, seed=2)
    exact.set_threads(1)
    one = (exact.prefill(prompt), exact.verify(cont[0], Draft.chain(cont[1:])))
    exact.set_threads(2)
    two = (exact.prefill(prompt), exact.verify(cont[0], Draft.chain(cont[1:])))
    exact.set_threads(torch.get_num_threads())
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_every_integer_path_gives_the_same_logits(integer_paths):
    """The target built on each path this CPU has (its own weight layout too) decodes to the same bits."""
    if len(integer_paths) < 2:
        pytest.skip("this CPU has one integer path (AVX2)")
    prompt, cont = random_ids(70), random_ids(20, seed=2)
    out = []
    for path in integer_paths:
        use_integer_path(path)
        t = ExactLlamaTarget(tiny_llama(seed=3))
        assert t.build_id.endswith(path)
        out.append((t.prefill(prompt), t.verify(cont[0], Draft.chain(cont[1:]))))
    assert all(torch.equal(a, b) for a, b in zip(out[0], out[1]))


# query heads per key/value head (with head_dim) set how many rows an attention tile takes: 1-6
# on AVX-512, where SmolLM2's 3 heads of 64 dims per group take the 16-dim-wide value tiles
GROUPINGS = {
    "1-per-group": dict(num_attention_heads=2, num_key_value_heads=2, head_dim=16),
    "3-per-group-d64": dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=1, head_dim=64),
    "5-per-group": dict(hidden_size=80, num_attention_heads=5, num_key_value_heads=1, head_dim=32),
}


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_head_groupings_are_batch_invariant_on_every_integer_path(grouping, integer_paths):
    """Chains of 1..18 rows after a 70-token prompt give plain decoding's bits, on every path,
    and every path the same bits."""
    prompt, cont = random_ids(70), random_ids(18, seed=1)
    outs = []
    for path in integer_paths:
        use_integer_path(path)
        t = ExactLlamaTarget(tiny_llama(seed=4, **GROUPINGS[grouping]))
        want = decode_one_by_one(t, prompt, cont)
        for n in range(2, len(cont) + 1):
            t.prefill(prompt)
            assert torch.equal(t.verify(cont[0], Draft.chain(cont[1:n])), want[:n]), (path, n)
        outs.append(want)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("heads,kv_heads,dim", [(2, 2, 16), (3, 1, 64), (5, 1, 32), (9, 3, 64), (4, 1, 256)])
def test_attention_rows_are_the_same_alone_and_together(heads, kv_heads, dim, integer_paths):
    """The attention kernel itself, ahead of the int8 quantization that can hide a last-bit change:
    each row of a 2..17-row chain after 100 cached keys (full, and a 40-key sliding window) gives
    the bits it gives alone, on every integer path, and every path the same bits."""
    lib = library()
    torch.manual_seed(0)
    cap, past, n = 256, 100, 17
    k, v = torch.randn(kv_heads, cap // 8, dim, 8).half(), torch.randn(kv_heads, cap, dim).half()
    q = torch.randn(n, heads, dim)

    def attend(T: int, first: int, window: int) -> torch.Tensor:
        pos = torch.arange(past + first, past + first + T, dtype=torch.int32)
        base = pos + 1  # each row sees the cache up to itself (its own key included)
        no_path, out = torch.zeros(T + 1, dtype=torch.int32), torch.empty(T, heads * dim)
        rows = q[first:first + T].contiguous()
        lib.hvd_attention(ptr(rows), T, heads, kv_heads, dim, ptr(k), ptr(v), cap, ptr(base), ptr(no_path),
                          ptr(no_path), ptr(pos), window, dim ** -0.5, ptr(out))
        return out

    alone = {}
    for path in integer_paths:
        use_integer_path(path, lib)
        for window in (0, 40):
            one = torch.cat([attend(1, r, window) for r in range(n)])
            for T in range(2, n + 1):
                assert torch.equal(attend(T, 0, window), one[:T]), (path, window, T)
            assert torch.equal(alone.setdefault(window, one), one), (path, window)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_argmax_is_the_first_index_of_each_rows_maximum(threads, integer_paths):
    """hvd_linear_argmax against the argmax of hvd_linear's own outputs, with ties (duplicated
    weight rows, in the first and in a later thread's columns), on every path and layout."""
    from hvd.verify import argmax_rows

    lib = library()
    torch.manual_seed(1)
    K, N, T = 64, 1000, 7
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    w[3] = w[40] = w[900] = 127  # the largest row, three times over: in the first and a later thread's columns
    x = torch.randint(-127, 128, (T, K), dtype=torch.int16)
    x[2] = 0  # an all-equal row: index 0
    x[5] = 1  # row 5's maximum is at the tied columns 3, 40 and 900: the first is 3
    xs = torch.rand(T) + 0.5
    for path in integer_paths:
        use_integer_path(path, lib)
        for group in ((4, 16) if path == "avx2" else (16,)):
            q = QuantLinear(QuantLinear.of(w.float(), group).q, torch.ones(N))  # the int8 rows as they are
            y, arg = torch.empty(T, N), torch.empty(T, dtype=torch.int32)
            lib.hvd_set_threads(threads)
            lib.hvd_linear(ptr(x), ptr(xs), T, K, ptr(q.q), ptr(q.scale), N, ptr(y), 0, group)
            lib.hvd_linear_argmax(ptr(x), ptr(xs), T, K, ptr(q.q), ptr(q.scale), N, group, ptr(arg))
            lib.hvd_set_threads(torch.get_num_threads())
            assert arg.tolist() == argmax_rows(y), (path, group)
            assert arg[2] == 0 and arg[5] == 3


def test_verify_argmax_is_the_argmax_of_verify(integer_paths):
    """The fused greedy verify gives each row's argmax of the logits, for chains and trees."""
    from hvd.verify import argmax_rows

    rng = random.Random(5)
    prompt = random_ids(60)
    for path in integer_paths:
        use_integer_path(path)
        t = ExactLlamaTarget(tiny_llama(seed=3))
        for n in (0, 1, 5, 17, t.max_draft_nodes):
            tree = Draft(tuple(rng.randrange(VOCAB) for _ in range(n)), tuple(rng.randint(-1, i - 1) for i in range(n)))
            t.prefill(prompt)
            want = argmax_rows(t.verify(2, tree))
            t.prefill(prompt)
            assert t.verify_argmax(2, tree) == want, (path, n)
