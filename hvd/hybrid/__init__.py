"""Hybrid Verified Decoding: per step, the cache draft, the model drafter, both or none, chosen
by the predicted accepted length and this machine's verify cost."""
