"""hvd's float32 attention (kernels_f32.c hvd_attention_f32) and HFTarget's use of it: each row is
the row a plain decoding step computes, bit for bit."""
import pytest
import torch
from torch.nn import functional as F

from hvd.targets import f32_attention, f32_linear
from hvd.targets.f32_attention import Rows
from hvd.targets.hf import HFTarget, tree_attention_mask
from hvd.types import Draft

from conftest import tiny_llama

pytestmark = pytest.mark.skipif(not f32_linear.available(1), reason="hvd's kernels do not run on this machine")

TREE = (-1, 0, 0, 2, -1, 4, 3)  # node j's parent (-1: the root)


def _qkv(seed: int, h: int, kvh: int, t: int, kv: int, d: int, room: int = 5):
    """q (1, h, t, d); k, v (1, kvh, kv, d) as views of buffers with room, as the cache keeps them."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, h, t, d, generator=gen)
    k, v = (torch.randn(1, kvh, kv + room, d, generator=gen)[:, :, :kv] for _ in range(2))
    return q, k, v


def _one(rows: Rows, t: int) -> Rows:
    """Row t of `rows` alone."""
    a, b = int(rows.off[t]), int(rows.off[t + 1])
    return Rows(rows.base[t : t + 1], rows.path[a:b], torch.tensor([0, b - a], dtype=torch.int32))


@pytest.mark.parametrize("h,kvh,d,past", [(4, 2, 8, 0), (6, 2, 16, 13), (9, 3, 64, 70), (4, 4, 32, 9), (8, 1, 8, 40)])
def test_matches_torch_on_chains_and_trees(h, kvh, d, past):
    scale = d**-0.5
    for parents in [tuple(range(-1, past % 4)), TREE]:
        chain = all(p == i - 1 for i, p in enumerate(parents))
        t = len(parents) + 1
        q, k, v = _qkv(h * d + past, h, kvh, t, past + t, d)
        rows = Rows.chain(past, t - 1) if chain else Rows.tree(past, parents)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=tree_attention_mask(parents, past, torch.float32), scale=scale,
                                              enable_gqa=True).transpose(1, 2)
        torch.testing.assert_close(f32_attention.attention(q, k, v, rows, scale), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("past", [0, 7, 8, 29, 64, 130])
def test_a_row_is_the_same_whatever_rows_share_the_call(past):
    """Batch invariance, bit for bit: each row of a chain or tree as computed alone."""
    for rows in (Rows.chain(past, 9), Rows.tree(past, TREE)):
        t = rows.base.shape[0]
        q, k, v = _qkv(past, 6, 2, t, past + t, 16)
        full = f32_attention.attention(q, k, v, rows, 0.25)
        for i in range(t):
            alone = f32_attention.attention(q[:, :, i : i + 1], k, v, _one(rows, i), 0.25)
            assert torch.equal(alone[0, 0], full[0, i])


def test_a_key_reached_by_a_path_scores_as_in_the_base():
    """A tree row over its ancestors gives the bits of the same keys read as a plain prefix."""
    q, k, v = _qkv(3, 4, 2, 1, 50, 8)
    contiguous = Rows(torch.tensor([50], dtype=torch.int32), torch.zeros(0, dtype=torch.int32),
                      torch.tensor([0, 0], dtype=torch.int32))
    via_path = Rows(torch.tensor([37], dtype=torch.int32), torch.arange(37, 50, dtype=torch.int32),
                    torch.tensor([0, 13], dtype=torch.int32))
    assert torch.equal(f32_attention.attention(q, k, v, contiguous, 0.3), f32_attention.attention(q, k, v, via_path, 0.3))


@pytest.mark.parametrize("heads,kv_heads,hidden", [(4, 2, 32), (6, 2, 48), (2, 2, 16)])
def test_hf_target_verifies_give_the_logits_of_plain_steps(heads, kv_heads, hidden):
    """Every row of a float32 chain or tree verify equals the plain step at its position, bit
    for bit (linears and attention by hvd's kernels), and torch's attention agrees closely."""
    model = tiny_llama(num_attention_heads=heads, num_key_value_heads=kv_heads, hidden_size=hidden)
    target = HFTarget(model)
    assert target.native_kernels
    prompt, toks = [(i * 7) % 50 + 1 for i in range(37)], [11, 4, 7, 20, 3, 9]
    target.prefill(prompt)
    plain = []
    for tok in toks:
        plain.append(target.verify(tok, Draft.empty())[0])
        target.commit([])
    target.prefill(prompt)
    chain = target.verify(toks[0], Draft.chain(toks[1:]))
    assert all(torch.equal(chain[i], plain[i]) for i in range(len(toks)))
    target.prefill(prompt)
    tree = target.verify(toks[0], Draft((toks[1], 33, toks[2], toks[3], 8, toks[4], toks[5]), (-1, -1, 0, 2, 2, 3, 5)))
    assert all(torch.equal(tree[row], plain[i]) for i, row in enumerate([0, 1, 3, 4, 6, 7]))
    target.native_kernels = False  # torch's attention
    target.prefill(prompt)
    torch.testing.assert_close(target.verify(toks[0], Draft.chain(toks[1:])), chain, atol=1e-4, rtol=1e-4)


def test_layers_it_does_not_cover_keep_torch():
    q, k, v = _qkv(0, 4, 2, 2, 10, 8)

    class Windowed:
        sliding_window = 4

    assert f32_attention.applies(object(), q, k, v)
    assert not f32_attention.applies(Windowed(), q, k, v)
    assert not f32_attention.applies(object(), q, k, v, softcap=30.0)
    assert not f32_attention.applies(object(), q.double(), k.double(), v.double())
    assert not f32_attention.applies(object(), q, k.transpose(2, 3), v)
