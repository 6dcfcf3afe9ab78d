"""`hvd prepare` on a model of its own (a tiny random Llama saved as a Hugging Face directory):
every step runs, resumes, and afterwards `hvd` runs on that model's own predictor and datastore."""
import pytest

from hvd.cli import main

from conftest import char_tokenizer, tiny_llama

pytestmark = pytest.mark.slow  # traces 5 prompts and tokenizes a small corpus: ~1 min


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    model = tiny_llama(seed=5)
    model.config.max_position_embeddings = 16384  # room for the char-level suite prompts
    model.generation_config.eos_token_id = None  # random weights: no early <eos>
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def test_prepare_builds_every_part_resumes_and_hvd_uses_them(model_dir, tmp_path, monkeypatch, capsys):
    from hvd.engine import Engine

    monkeypatch.setenv("HVD_CACHE", str(tmp_path / "cache"))
    argv = ["prepare", "--model", str(model_dir), "--threads", "1"]
    assert main(argv + ["--check"]) == 0
    out = capsys.readouterr().out
    assert "missing: datastore, cost, traces, predictor" in out

    small = ["--trace-limit", "1", "--trace-tokens", "12", "--corpus-chars", "20000"]
    assert main(argv + small) == 0
    out = capsys.readouterr().out
    for step in ("datastore", "cost", "traces", "predictor"):
        assert f"{step:<10} done in" in out, out
    assert "held-out precision" in out

    assert main(argv + small) == 0  # resumable: nothing to redo
    out = capsys.readouterr().out
    assert out.count("ready") == 4 and "done in" not in out

    assert main(argv + ["--check"]) == 0
    assert "ready: hvd uses this model's own predictor" in capsys.readouterr().out

    engine = Engine.load(str(model_dir), threads=1)
    assets = engine.stores.assets
    hvd = engine.drafter("hvd")
    assert hvd.predictor.info["traces"] == str(assets.traces_path)
    assert hvd.predictor.info["provenance"]["model"] == assets.key and hvd.predictor.info["provenance"]["dtype"] == engine.target.precision
    aded = engine.drafter("aded")
    table = aded.trigrams.table
    assert int(table.meta["tokens"]) > 1000 and table.vocab == engine.target.vocab_size
    prompt = "def f(x):\n    return x"
    ref = engine.generate(prompt, method="ar", max_new_tokens=16).token_ids
    for method in ("hvd", "aded", "rule-hybrid"):
        assert engine.generate(prompt, method=method, max_new_tokens=16).token_ids == ref, method


def test_prepare_drafter_trains_the_models_own_dflash(model_dir, tmp_path, monkeypatch, capsys):
    from hvd.errors import MethodUnavailable
    from hvd.engine import Engine

    monkeypatch.setenv("HVD_CACHE", str(tmp_path / "cache"))
    argv = ["prepare", "--model", str(model_dir), "--threads", "1", "--trace-limit", "1", "--trace-tokens", "12",
            "--corpus-chars", "20000"]
    engine = Engine.load(str(model_dir), threads=1)
    with pytest.raises(MethodUnavailable, match="hvd prepare --model MODEL --drafter"):
        engine.drafter("dflash")  # the shipped checkpoint is SmolLM2's
    assert main(argv + ["--check", "--drafter"]) == 0
    assert "drafter" in capsys.readouterr().out.splitlines()[-1]  # missing, when asked for
    assert main(argv + ["--drafter", "--drafter-steps", "2", "--drafter-texts", "1"]) == 0
    out = capsys.readouterr().out
    assert "drafter    done in" in out and "held-out τ" in out, out
    engine = Engine.load(str(model_dir), threads=1)
    assert engine.drafter("dflash").net.c.vocab == engine.target.vocab_size  # its own
    prompt = "def f(x):\n    return x"
    ref = engine.generate(prompt, method="ar", max_new_tokens=16).token_ids
    assert engine.generate(prompt, method="dflash", max_new_tokens=16).token_ids == ref


def test_prepare_bad_input(capsys):
    assert main(["prepare", "--trace-limit", "0"]) == 2
    assert "--trace-limit" in capsys.readouterr().err
    assert main(["prepare", "--model", "/no/such/model", "--check"]) == 2
    assert "model path not found" in capsys.readouterr().err
