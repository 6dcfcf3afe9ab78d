"""Model files: the GGUF conversion cache."""
import types

import pytest

from hvd.targets import loader as models


def _convert_racing(tmp_path, monkeypatch, other):
    """Run `_convert_gguf` with a fake model whose saving calls `other(dest)` (another
    process acting on the destination meanwhile). Returns the destination."""
    import transformers

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    dest = tmp_path / "cache" / "m"

    class Saved:
        def save_pretrained(self, where):
            where.mkdir(parents=True, exist_ok=True)
            (where / "config.json").write_text("{}")
            (where / "mine").write_text("")
            other(dest)

    model = Saved()
    model.config = types.SimpleNamespace()
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Saved())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)
    models._convert_gguf(gguf, dest)
    return dest


def test_a_conversion_another_process_finished_first_is_used(tmp_path, monkeypatch):
    """Two processes converting the same GGUF at once (two `hvd bench` on a fresh machine):
    the one that renames second must keep the first's directory, not crash."""
    def finished(dest):
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "config.json").write_text("{}")

    dest = _convert_racing(tmp_path, monkeypatch, finished)
    assert (dest / "config.json").is_file() and not (dest / "mine").exists()
    assert [p.name for p in dest.parent.iterdir()] == ["m"]  # our copy is cleaned up


def test_a_failed_rename_without_a_finished_copy_is_an_error(tmp_path, monkeypatch):
    def stray(dest):  # not empty, and not a finished conversion
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "stray").write_text("")

    with pytest.raises(OSError):
        _convert_racing(tmp_path, monkeypatch, stray)
