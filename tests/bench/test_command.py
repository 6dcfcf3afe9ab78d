"""`hvd bench` end to end on the tiny model: the table, the JSON, replay's reference cache,
skipped peers, and one-line errors for bad prompt files."""
from __future__ import annotations

import json

import pytest

from hvd.bench import command, llamacpp, peers
from hvd.offline.references import ReferenceKey, ReferenceStore, ids_hash, reference
from hvd.cli import build_parser, main

JSON_KEYS = {"method", "dataset", "speedup", "e2e_speedup", "tau", "exact", "tokens_per_second",
             "oracle_fraction", "draft_share", "n_prompts"}


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"id": "a", "prompt": "def f(x):\n    return x + 1\n\ndef f(x):\n", "max_new_tokens": 24},
            {"id": "b", "category": "other", "prompt": "the cat sat on the mat. the cat", "max_new_tokens": 16}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _bench(tiny_engine, argv, capsys):
    a = build_parser().parse_args(["bench", *argv])
    command.run(lambda model: tiny_engine, a)
    return capsys.readouterr()


# ---- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("body,msg", [
    ('{"id": "a", "prompt": "x"}\n{"id": "b"\n', "bad.jsonl:2: bad JSON"),
    ('{"prompt": "x"}\n', 'bad.jsonl:1: missing "id"'),
    ("", "empty file"),
])
def test_bad_prompts_file_is_a_one_line_error(tmp_path, capsys, body, msg):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(body)
    assert main(["bench", "--prompts", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hvd: error:") and msg in err and "\n" not in err, err


def test_missing_prompts_file_and_bad_numbers(tmp_path, capsys):
    assert main(["bench", "--prompts", str(tmp_path / "none.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    for argv, msg in ((["--repeats", "0"], "--repeats"), (["--max-new-tokens", "-1"], "--max-new-tokens"),
                      (["--suite", "nope"], "nope")):
        assert main(["bench", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hvd: error:") and msg in err and "\n" not in err, err


# ---- peers that cannot run ----------------------------------------------------------------


def test_llamacpp_peers_report_why_they_cannot_run(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    for name in llamacpp.NAMES:
        assert "not installed" in peers.unavailable(name, tmp_path / "m.gguf")
    assert peers.unavailable("hf", None) is None and peers.unavailable("hf-pld", None) is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "llama_cpp" else real(name, *a))
    assert "GGUF" in peers.unavailable("llamacpp", None)
    assert peers.unavailable("llamacpp-pld", tmp_path / "m.gguf") is None


def test_gguf_of_the_model_argument(tmp_path):
    assert command.gguf_of(str(tmp_path / "x.gguf")) == tmp_path / "x.gguf"
    assert command.gguf_of(str(tmp_path)) is None
    assert command.gguf_of(None) is None or command.gguf_of(None).suffix == ".gguf"


# ---- the command on the tiny model --------------------------------------------------------


def test_timed_bench_writes_table_json_and_plot(tiny_engine, prompts_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(llamacpp, "unavailable", lambda gguf: "llama-cpp-python is not installed")
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    res = _bench(tiny_engine, ["--prompts", str(prompts_file), "--methods", "ar,pld,suffix,oracle,llamacpp",
                               "--repeats", "2", "--json", str(out), "--plot", str(png)], capsys)
    assert "hvd bench: skipping llamacpp: llama-cpp-python is not installed" in res.err
    data = json.loads(out.read_text())
    assert set(data) == {"results", "machine", "model", "template", "command", "mode", "cost_curves"} and data["mode"] == "timed"
    assert data["template"] == "plain-text transcript (no chat template)"  # the tiny engine's tokenizer has none
    assert "messages rendered with the plain-text transcript" in res.out
    assert {"cpu", "cores", "torch"} <= set(data["machine"])
    got = {(r["dataset"], r["method"]) for r in data["results"]}
    assert got == {(d, m) for d in ("mine", "other") for m in ("ar", "pld", "suffix", "oracle")}
    for r in data["results"]:
        assert JSON_KEYS <= set(r) and r["exact"] is True and r["speedup"] > 0 and r["n_prompts"] == 1
        assert r["method"] != "oracle" or r["oracle_fraction"] == pytest.approx(1.0)
    assert "| mine | ar | 1.00x |" in res.out and "llamacpp" not in res.out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_replay_bench_records_references_once(tiny_engine, prompts_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HVD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    argv = ["--prompts", str(prompts_file), "--methods", "ar,pld,suffix,oracle,hf,layerskip", "--replay", "--json", str(out)]
    res = _bench(tiny_engine, argv, capsys)
    assert "skipping hf: peers are not drafters and cannot be replayed" in res.err
    assert "skipping layerskip: it drafts from the target's own cache or hidden states" in res.err
    assert "target did not run" in res.out
    files = list((tmp_path / "cache" / "references").glob("*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 2
    data = json.loads(out.read_text())
    assert data["mode"] == "replay"
    rows = {(r["dataset"], r["method"]): r for r in data["results"]}
    assert set(rows) == {(d, m) for d in ("mine", "other") for m in ("ar", "pld", "suffix", "oracle")}
    assert rows[("mine", "ar")]["tau"] == 1.0 and rows[("mine", "oracle")]["tau"] == pytest.approx(23.0)
    assert all(r["speedup"] is None and r["exact"] is None and r["mode"] == "replay" for r in rows.values())
    # a second replay reads the recorded outputs instead of generating them again
    monkeypatch.setattr(tiny_engine, "generate", lambda *a, **k: pytest.fail("ar ran again"))
    _bench(tiny_engine, argv, capsys)
    assert len(files[0].read_text().splitlines()) == 2


# ---- the reference store ------------------------------------------------------------------


def test_reference_store_round_trip_and_damaged_lines(tmp_path):
    store = ReferenceStore(tmp_path / "refs" / "m.jsonl")
    assert not store.path.exists()  # nothing is read or written until used
    key = ReferenceKey("p", ids_hash([1, 2, 3]), 8)
    assert store.get(key) is None and len(store) == 0
    store.put(key, [4, 5])
    with store.path.open("a") as f:
        f.write('{"prompt_id": "cut", "ids_sha"')  # a crash mid-line
    store.put(ReferenceKey("q", ids_hash([1]), 8), [6])
    again = ReferenceStore(store.path)
    assert again.get(key) == [4, 5] and again.get(ReferenceKey("q", ids_hash([1]), 8)) == [6] and len(again) == 2
    assert again.get(ReferenceKey("p", ids_hash([1, 2, 3]), 9)) is None  # another max_new_tokens
    assert again.get(ReferenceKey("p", ids_hash([1, 2, 4]), 8)) is None  # other token ids


def test_reference_generates_only_when_missing(tmp_path):
    calls = []

    class FakeEngine:
        def generate(self, ids, method, max_new_tokens):
            calls.append((tuple(ids), method, max_new_tokens))
            return type("R", (), {"token_ids": [9] * max_new_tokens})()

    store = ReferenceStore(tmp_path / "m.jsonl")
    assert reference(FakeEngine(), store, "p", [1, 2], 3) == [9, 9, 9]
    assert reference(FakeEngine(), ReferenceStore(store.path), "p", [1, 2], 3) == [9, 9, 9]
    assert calls == [((1, 2), "ar", 3)]
