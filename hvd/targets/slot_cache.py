"""What the two static-cache Llama targets (lean bf16, exact int8) share: the request
bookkeeping around their forward. Cache slot = position for committed tokens; a verify writes
the root and the draft nodes at slots past..past+n; `commit` moves the accepted path down
(rollback is moving the length back).

A subclass provides `_forward(ids, past, pos, paths, layers=None, keep=())`, `_logits(h)`,
`_reusable(ids)`, `_move_slots(src, past)` (cache slots src -> past, past+1, ...) and
`prefill_chunk` (rows per prefill forward), and calls `_identify(model)` when made."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from hvd.targets import identity
from hvd.targets.protocol import TracksCommits, drafter_dims, kept_rows, verify_layout
from hvd.types import Draft

if TYPE_CHECKING:
    from hvd.targets.shape import LlamaShape


class SlotCacheTarget(TracksCommits):
    prefill_chunk: int
    build_id = ""  # targets with kernels of their own set it
    shape: "LlamaShape"

    def _identify(self, model) -> None:
        """The target's `eos_ids`, `fingerprint` and `num_layers`, from the model it was made from."""
        self.eos_ids = identity.eos_ids(model)
        self.fingerprint = identity.target_fingerprint(model, type(self).__name__, self.precision, self.build_id,
                                                       self.device)
        self.num_layers = self.shape.layers
        self._dims = drafter_dims(model.config)  # for `shared_weights`

    @torch.inference_mode()
    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        ids = [int(t) for t in ids]
        start = self._reusable(ids)
        layers = self.config.hidden_layers
        if not start:
            self._hidden.clear()
        chunk = self.prefill_chunk
        for i in range(start, len(ids), chunk):  # chunks at fixed multiples: a kept prefix rounds the same
            j = min(i + chunk, len(ids))
            h, hid = self._forward(ids[i:j], i, torch.arange(i, j), None, keep=layers)
            for l, x in hid.items():
                self._hidden.write(l, i, x)
        self._len, self._ids = len(ids), ids
        return self._logits(h[-1:])[0]

    @torch.inference_mode()
    def verify(self, root: int, draft: Draft) -> torch.Tensor:
        return self._logits(self._verify_forward(root, draft))

    def _verify_forward(self, root: int, draft: Draft) -> torch.Tensor:
        """The final-normed hidden states (1 + n, hidden) of the root and every draft node."""
        past = self._len
        self._pending_ids = [int(root), *draft.tokens]
        paths, pos = verify_layout(past, draft)
        h, hid = self._forward(self._pending_ids, past, pos, paths, keep=self.config.hidden_layers)
        self._pending_hidden = hid
        return h

    @torch.inference_mode()
    def commit(self, path: Sequence[int]) -> None:
        past, keep = self._len, kept_rows(path)
        if keep != list(range(len(keep))):  # a branch: move the kept slots down
            self._move_slots([past + k for k in keep], past)
        self._record(past, keep)

    def skip_step(self, token: int, past: int, offset: int, layers: Sequence[int]) -> int:
        """`SkipsLayers`: the draft token goes to slot past + offset, which the next verify
        overwrites (so `skip_done` has nothing to drop)."""
        slot = past + offset
        h, _ = self._forward([token], slot, torch.tensor([slot]), [list(range(past, slot + 1))], layers=layers)
        return int(self._logits(h).argmax())

    def skip_done(self, past: int, layers: Sequence[int]) -> None:
        pass
