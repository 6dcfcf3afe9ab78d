"""A transformers KV cache that appends in place: `HFTarget`'s decode cache.

transformers' `DynamicLayer` appends a forward's keys and values with `torch.cat`, a copy of
the layer's whole cache at every forward: a cost that grows with the context and is paid by
every step. `GrowingLayer` keeps each layer's keys and values in buffers with room to spare
(doubled when full) and exposes the filled part as views, so a forward writes only its own
tokens. Cropping, and `HFTarget.commit`'s moves of kept rows, act on those views as they would
on concatenated tensors; what attention reads holds the same numbers either way.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_ROOM = 256  # tokens a layer's first buffers hold


class GrowingLayer(DynamicLayer):
    """`DynamicLayer` with keys and values (batch, heads, length, head dim) as views of larger buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_room = self._value_room = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, t = self.get_seq_length(), key_states.shape[-2]
        if self._key_room is None or n + t > self._key_room.shape[-2]:
            self._key_room, self._value_room = _grown(self.keys, key_states, n), _grown(self.values, value_states, n)
        self._key_room[..., n : n + t, :] = key_states
        self._value_room[..., n : n + t, :] = value_states
        self.keys, self.values = self._key_room[..., : n + t, :], self._value_room[..., : n + t, :]
        return self.keys, self.values


def _grown(filled: torch.Tensor, new: torch.Tensor, n: int) -> torch.Tensor:
    """A buffer (.., room, head dim) for at least twice the `n` filled tokens plus `new`'s,
    holding `filled`'s."""
    shape = (*new.shape[:-2], max(MIN_ROOM, 2 * (n + new.shape[-2])), new.shape[-1])
    room = new.new_empty(shape)
    if n:
        room[..., :n, :] = filled
    return room


def growing_cache(config) -> DynamicCache:
    """A `DynamicCache` for `config` whose full-attention layers append in place (sliding-window
    and other layer kinds stay transformers' own)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
