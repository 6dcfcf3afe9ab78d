"""hvd's float32 linear (kernels_f32.c hvd_linear_f32) and HFTarget's use of it."""
import pytest
import torch
from torch.nn import functional as F

from hvd.targets import f32_linear
from hvd.targets.hf import HFTarget
from hvd.types import Draft

from conftest import tiny_llama

pytestmark = pytest.mark.skipif(not f32_linear.available(1), reason="hvd's kernels do not run on this machine")


@pytest.mark.parametrize("n,k", [(1, 8), (5, 16), (37, 64), (130, 576)])
def test_matches_torch(n, k):
    gen = torch.Generator().manual_seed(n * k)
    w, b, x = torch.randn(n, k, generator=gen), torch.randn(n, generator=gen), torch.randn(3, 7, k, generator=gen)
    torch.testing.assert_close(f32_linear.linear(x, w, b), F.linear(x, w, b), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7, 12, 33])
def test_a_row_is_the_same_whatever_rows_share_the_call(rows):
    """Batch invariance, bit for bit: every row as computed alone, in any slice of the call."""
    gen = torch.Generator().manual_seed(rows)
    w, x = torch.randn(141, 96, generator=gen), torch.randn(rows, 96, generator=gen)
    full = f32_linear.linear(x, w)
    for i in range(rows):
        assert torch.equal(f32_linear.linear(x[i : i + 1], w)[0], full[i])
        assert torch.equal(f32_linear.linear(x[i:], w), full[i:])


def test_only_applicable_linears_are_swapped_and_autograd_keeps_torch():
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 3), torch.nn.Linear(3, 4))
    assert f32_linear.use_native_linears(model) == 2  # the last one's input width is not a multiple of 8
    assert [type(m).__name__ for m in model] == ["NativeLinear", "NativeLinear", "Linear"]
    x = torch.randn(2, 16, requires_grad=True)
    model(x).sum().backward()  # torch's linear where a graph is needed
    assert x.grad is not None and model[0].weight.grad is not None


def test_hf_target_runs_its_float32_linears_by_the_kernel():
    """Every linear and the LM head by the kernel, named in the build id (cost curves and
    references re-keyed), with logits as torch computes them."""
    model = tiny_llama()
    with torch.inference_mode():
        want = model(torch.tensor([[5, 9, 3, 17, 11, 4, 7]])).logits[0, 4:]  # (3, vocab), torch's linears
    target = HFTarget(model)
    assert target.native_kernels and target.build_id.endswith("+f32-kernels")
    assert {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)} == {"NativeLinear"}
    target.prefill([5, 9, 3, 17])
    got = target.verify(11, Draft((4, 7), (-1, 0)))  # (3, vocab)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
