"""`make run`'s demo: the default model makes the demo's whole-file edit right, and `hvd` gives
the same tokens as `ar` on it."""
import pytest

from hvd import demo


def test_the_expected_file_changes_the_port_alone():
    want = demo.expected()
    assert want["server"]["port"] == 9000 and demo.CONFIG["server"]["port"] == 8000
    assert {**want, "server": None} == {**demo.CONFIG, "server": None}


@pytest.mark.slow
def test_the_default_model_makes_the_demo_edit_right_and_hvd_matches_ar():
    from hvd import Engine

    engine = Engine.load()
    prompt = [{"role": "user", "content": demo.request()}]
    ar = engine.generate(prompt, method="ar", max_new_tokens=400, stop=demo.STOP)
    assert demo.edited(ar) == demo.expected(), ar.text
    assert engine.generate(prompt, method="hvd", max_new_tokens=400, stop=demo.STOP).token_ids == ar.token_ids
