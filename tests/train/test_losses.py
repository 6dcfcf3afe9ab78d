"""Block losses on hand-computed cases."""
import math

import pytest
import torch

from hvd.train.losses import LossConfig, block_loss, block_tau, chain_reward, first_wrong, position_weights


def two_way_logits(p_label):
    """Logits (1, P, 2) where label 0 has probability p_label[k] at position k."""
    p = torch.tensor(p_label)
    return torch.stack([p.log(), (1 - p).log()], dim=-1)[None]


def test_position_weights():
    assert position_weights(3, 10.0).tolist() == pytest.approx([1.0, math.exp(-0.1), math.exp(-0.2)])


def test_chain_loss_is_the_mean_prefix_correct_probability():
    logits, labels = two_way_logits([0.5, 0.4, 0.9]), torch.zeros(1, 3, dtype=torch.long)
    logp = torch.log_softmax(logits, -1)[..., 0]
    assert float(chain_reward(logp)) == pytest.approx((0.5 + 0.5 * 0.4 + 0.5 * 0.4 * 0.9) / 3)
    cfg = LossConfig(weighting=False, focal=False, chain=True, chain_alpha=40.0)
    loss, parts = block_loss(logits, labels, cfg)
    ce = -math.log(0.5) - math.log(0.4) - math.log(0.9)
    assert float(loss) == pytest.approx(ce / 3 + 40 * (1 - (0.5 + 0.2 + 0.18) / 3), rel=1e-5)


def test_focal_touches_only_the_first_wrong_position():
    logits, labels = two_way_logits([0.8, 0.3, 0.2, 0.9]), torch.zeros(1, 4, dtype=torch.long)
    assert first_wrong(logits, labels).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    base, _ = block_loss(logits, labels, LossConfig(weighting=False, focal=False, chain=False))
    with_focal, _ = block_loss(logits, labels, LossConfig(weighting=False, focal=True, chain=False, focal_lambda=0.3))
    assert float(with_focal - base) == pytest.approx(0.3 * -math.log(0.3), rel=1e-5)
    right = two_way_logits([0.8, 0.7, 0.6, 0.9])
    assert first_wrong(right, labels).sum() == 0
    a, _ = block_loss(right, labels, LossConfig(weighting=False, focal=True, chain=False))
    b, _ = block_loss(right, labels, LossConfig.uniform())
    assert float(a) == pytest.approx(float(b))


def test_weighting_and_uniform():
    logits, labels = two_way_logits([0.5, 0.25, 0.8]), torch.zeros(1, 3, dtype=torch.long)
    ce = torch.tensor([-math.log(0.5), -math.log(0.25), -math.log(0.8)])
    w = torch.tensor([1.0, math.exp(-0.1), math.exp(-0.2)])
    got, _ = block_loss(logits, labels, LossConfig(weighting=True, gamma=10.0, focal=False, chain=False))
    assert float(got) == pytest.approx(float((w * ce).sum() / w.sum()), rel=1e-5)
    uni, _ = block_loss(logits, labels, LossConfig.uniform())
    assert float(uni) == pytest.approx(float(ce.mean()), rel=1e-5)


def test_block_tau_counts_leading_correct_predictions():
    logits = two_way_logits([0.9, 0.8, 0.1, 0.9]).repeat(2, 1, 1)
    labels = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0]])
    assert block_tau(logits, labels).tolist() == [3, 1]
