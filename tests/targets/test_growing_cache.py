"""`GrowingLayer` holds exactly what transformers' `DynamicLayer` holds, through any mix of
appends, crops and in-place moves of kept rows (what `HFTarget` does to its cache)."""
import random

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from hvd.targets.growing_cache import MIN_ROOM, GrowingLayer, growing_cache

from conftest import tiny_llama


def _ops(rng: random.Random) -> list[tuple[str, int]]:
    """Up to 12 random appends (1-300 tokens: some outgrow the room), crops and moves."""
    limits = {"append": 300, "crop": 40, "move": 5}
    return [(op, rng.randint(1, limits[op])) for op in rng.choices(list(limits), k=rng.randint(0, 12))]


@pytest.mark.parametrize("seed", range(60))
def test_matches_dynamic_layer(seed):
    ops, gen = _ops(random.Random(seed)), torch.Generator().manual_seed(seed)
    ours, theirs = GrowingLayer(), DynamicLayer()
    for op, n in ops:
        if op == "append":
            k, v = torch.randn(1, 2, n, 4, generator=gen), torch.randn(1, 2, n, 4, generator=gen)
            got, want = ours.update(k, v), theirs.update(k, v)
            assert all(torch.equal(a, b) for a, b in zip(got, want))
        elif op == "crop":
            ours.crop(-min(n, ours.get_seq_length()))
            theirs.crop(-min(n, theirs.get_seq_length()))
        elif theirs.get_seq_length() > n:  # HFTarget.commit's move of a branch's kept rows down
            past = theirs.get_seq_length() - n - 1
            idx = torch.arange(past + 1, past + 1 + n)
            for layer in (ours, theirs):
                layer.keys[:, :, past : past + n] = layer.keys[:, :, idx]
                layer.values[:, :, past : past + n] = layer.values[:, :, idx]
        assert ours.get_seq_length() == theirs.get_seq_length()
        if theirs.is_initialized:
            assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


def test_appends_write_in_place_until_the_room_is_full():
    layer = GrowingLayer()
    layer.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    room = layer.keys.untyped_storage().data_ptr()
    for _ in range(MIN_ROOM - 3):
        layer.update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert layer.keys.untyped_storage().data_ptr() == room  # no copy of the cache so far
    layer.update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert layer.keys.untyped_storage().data_ptr() != room and layer.get_seq_length() == MIN_ROOM + 1
    assert layer.keys[..., 3:, :].eq(1).all() and layer.keys[..., :3, :].eq(0).all()


def test_the_cache_has_a_growing_layer_per_full_attention_layer():
    model = tiny_llama()
    cache = growing_cache(model.config)
    assert len(cache.layers) == model.config.num_hidden_layers
    assert all(type(layer) is GrowingLayer for layer in cache.layers)
