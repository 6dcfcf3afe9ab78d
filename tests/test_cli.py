"""CLI input errors: one line on stderr, exit status 2, no traceback, no model load needed."""
import json

import pytest

from hvd.cli import main


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["generate", ""], "prompt is empty"),
        (["generate", "hi", "--method", "nope"], "unknown method"),
        (["generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["generate", "hi", "--max-new-tokens", "-3"], "--max-new-tokens"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--max-queue", "0"], "--max-queue"),
        (["serve", "--max-body-bytes", "0"], "--max-body-bytes"),
        (["serve", "--shutdown-timeout", "-1"], "--shutdown-timeout"),
        (["serve", "--shutdown-timeout", "soon"], "--shutdown-timeout"),
        (["bench", "--repeats", "x"], "invalid int"),
        (["agent-bench", "--warm-episodes", "-1"], "--warm-episodes"),
        (["train", "drafter", "--steps", "0"], "--steps"),
        (["trace", "--limit", "0"], "--limit"),
        (["generate", "hi", "--temperature", "-0.5"], "temperature"),
        (["generate", "hi", "--model", "/no/such/model"], "model path not found"),
        (["generate"], "PROMPT or --messages"),
        (["generate", "hi", "--max-new-tokens", "x"], "invalid int"),
        (["bench", "--methods", "ar,nope"], "unknown method"),
        (["bench", "--limit", "0"], "--limit"),
        (["frobnicate"], "invalid choice"),
        (["agent-bench", "--methods", "ar,nope"], "unknown method"),
        (["agent-bench", "--kinds", "chess"], "--kinds"),
        (["agent-bench", "--episodes", "0"], "--episodes"),
        (["agent-bench", "--llama-server", "/no/such/binary"], "not an executable"),
        (["agent-bench", "--concurrency", "1,x"], "--concurrency"),
        (["agent-bench", "--concurrency", "0,4"], "--concurrency"),
        (["agent-bench", "--concurrency", "4", "--edits", "0", "--tools", "0", "--chats", "0"], "no agents"),
        (["agent-bench", "--concurrency", "4", "--vllm-python", "/no/python"], "--vllm-python"),
        (["serve", "--max-batch", "0"], "--max-batch"),
        (["serve", "--kv-budget-mib", "-5"], "--kv-budget-mib"),
        (["serve", "--chat-template", "/no/such/template.jinja"], "cannot read the chat template"),
        (["prepare", "--trace-tokens", "0"], "--trace-tokens"),
        (["generate", "hi", "--model", "gemma4-9000m"], "packaged models: smollm2-135m, gemma3-270m"),
    ],
)
def test_bad_input_is_one_line(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hvd: error:") and msg in err and "\n" not in err, err


def test_unreadable_and_malformed_model_files(tmp_path, capsys):
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"not a gguf")
    (tmp_path / "dir").mkdir()
    (tmp_path / "w.bin").write_text("x")
    for model, msg in ((bad, "cannot read GGUF"), (tmp_path / "dir", "no config.json"), (tmp_path / "w.bin", ".gguf")):
        assert main(["generate", "hi", "--model", str(model)]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, err


def test_truncated_gguf_is_one_line(tmp_path, monkeypatch, capsys):
    from hvd.targets.loader import default_model_path

    monkeypatch.setenv("HVD_CACHE", str(tmp_path / "cache"))
    cut = tmp_path / "cut.gguf"
    with open(default_model_path(), "rb") as f:
        cut.write_bytes(f.read(20_000_000))  # a download that stopped early
    assert main(["generate", "hi", "--model", str(cut)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hvd: error: cannot read GGUF model") and "\n" not in err, err


def test_bad_messages_files(tmp_path, capsys):
    cases = {"a.json": "{not json", "b.json": json.dumps({"role": "user"}), "c.json": json.dumps([{"role": "user", "content": 3}])}
    for name, body in cases.items():
        (tmp_path / name).write_text(body)
        assert main(["generate", "--messages", str(tmp_path / name)]) == 2
        assert capsys.readouterr().err.startswith("hvd: error:")
    assert main(["generate", "--messages", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_help_lists_methods(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for m in ("ar", "pld", "suffix"):
        assert f"  {m} " in out


def test_default_method_is_hvd_where_it_runs(tiny_engine, tmp_path, monkeypatch):
    from hvd.methods import default_method

    monkeypatch.setenv("HVD_CACHE", str(tmp_path))  # the verify-cost curve is measured on the tiny target
    assert default_method(tiny_engine) == "hvd"
    assert tiny_engine.generate("ab", method="hvd", max_new_tokens=8).stats.method == "hvd"


def test_default_method_falls_back_to_suffix_with_a_note(tiny_engine, monkeypatch, capsys):
    from hvd.methods import default_method
    from hvd.hybrid.predictor import PredictorError

    def refuse(method):
        raise PredictorError("the HVD predictor was trained for a 49152-token vocabulary, this model has 60000")

    monkeypatch.setattr(tiny_engine, "drafter", refuse)
    assert default_method(tiny_engine) == "suffix"
    err = capsys.readouterr().err.strip()
    assert err.startswith("hvd: note: using suffix, not hvd:") and "\n" not in err
