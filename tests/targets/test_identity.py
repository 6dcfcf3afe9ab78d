from hvd.targets.hf import HFTarget
from hvd.targets.identity import eos_ids, weights_key

from conftest import tiny_llama


def test_weights_key_tells_weights_apart():
    a, b = tiny_llama(0), tiny_llama(1)
    assert weights_key(a) == weights_key(tiny_llama(0)) != weights_key(b)


def test_a_target_names_its_eos_and_fingerprint_from_its_model():
    model = tiny_llama(0)
    model.generation_config.eos_token_id = [2, 7]
    t = HFTarget(model)
    assert t.eos_ids == frozenset({2, 7})
    assert t.fingerprint == HFTarget(tiny_llama(0)).fingerprint != HFTarget(tiny_llama(1)).fingerprint
    model.generation_config.eos_token_id = None
    assert eos_ids(model) == frozenset()
