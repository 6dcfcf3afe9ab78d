"""Training smoke run on the tiny model: cache, steps, checkpoint, resume, a usable drafter."""
import argparse
from dataclasses import replace

import pytest

from hvd.drafters import dflash
from hvd.train import data as D
from hvd.cli.train import loss_config
from hvd.train.drafter import TrainConfig, lr_at, train
from hvd.train.losses import LossConfig

TINY = dict(steps=12, batch=4, anchors=2, eval_every=6, eval_blocks=8, block=6, window=16, n_layers=1, n_target_layers=2)
DATA = D.DataConfig(suites=("code",), prompts_per_suite=3, regenerate=6, stdlib_files=2, max_len=160, holdout_every=3)


def test_smoke_run_trains_saves_and_resumes(tiny_engine, tmp_path):
    logs = []
    report = train(tiny_engine, tmp_path / "ck", TrainConfig(**TINY), DATA, tmp_path / "work", log=logs.append)
    assert report["sequences"] == 5 and len(report["history"]) == 2
    assert 1.0 <= report["held_out_tau"] <= 6.0
    assert (tmp_path / "ck" / dflash.WEIGHTS_FILE).is_file() and (tmp_path / "ck" / dflash.CONFIG_FILE).is_file()
    again = train(tiny_engine, tmp_path / "ck", TrainConfig(**TINY), DATA, tmp_path / "work", log=logs.append)
    assert any("resumed at step 12" in l for l in logs) and again["history"] == report["history"]
    train(tiny_engine, tmp_path / "ck2", TrainConfig(**TINY), replace(DATA, holdout_every=4), tmp_path / "work",
          log=logs.append)
    assert not any("starting over" in l for l in logs)  # another output: its own state
    train(tiny_engine, tmp_path / "ck", TrainConfig(**TINY), replace(DATA, holdout_every=4), tmp_path / "work",
          log=logs.append)
    assert any("starting over" in l for l in logs)  # same output, other data: never resumed
    drafter = dflash.for_target(tiny_engine.target, tmp_path / "ck")
    prompt = list(range(1, 30))
    ref = tiny_engine.generate(prompt, method="ar", max_new_tokens=32).token_ids
    assert tiny_engine.generate(prompt, max_new_tokens=32, drafter=drafter).token_ids == ref


def test_training_data_is_train_split_only():
    from hvd.data.suites import load_suite

    eval_ids = {p.id for p in load_suite("code", split="eval")}
    keys = [key for key, _ in D.sources(DATA)]
    assert keys and not any(k.split(":", 1)[1] in eval_ids for k in keys if k.startswith("code:"))


def test_schedule_and_flags():
    cfg = TrainConfig(steps=200, lr=1e-3, warmup=0.05)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(199, cfg) < 1e-5
    ns = lambda **kw: argparse.Namespace(**{"uniform": False, "losses": "weighting,focal,chain", **kw})
    assert loss_config(ns(uniform=True)) == LossConfig.uniform()
    assert loss_config(ns(losses="chain")) == LossConfig(weighting=False, focal=False, chain=True)
    with pytest.raises(ValueError, match="unknown loss"):
        loss_config(ns(losses="nope"))


def test_cache_rebuild_skips_regeneration(tiny_engine, tmp_path, monkeypatch):
    layers, data = (1, 2), replace(DATA, suites=("chat",), max_len=4096)  # short prompts: room to regenerate
    calls = []
    real = tiny_engine.generate
    monkeypatch.setattr(tiny_engine, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = D.build_cache(tiny_engine, data, layers, tmp_path)
    regenerated = len(calls)
    assert regenerated > 0
    assert D.build_cache(tiny_engine, data, layers, tmp_path) == first and len(calls) == regenerated
    D.build_cache(tiny_engine, data, (1,), tmp_path)  # other layers: every shard is rebuilt
    assert len(calls) == 2 * regenerated


def test_packed_blocks_equal_blocks_drafted_alone():
    """A block packed with others of its sequence gives the logits it gets alone with its own
    window of context (the inference drafter's view)."""
    import random

    import torch

    from hvd.drafters.dflash_model import DFlashConfig, DFlashNet

    torch.manual_seed(0)
    c = DFlashConfig(hidden=16, vocab=32, target_layers=(1, 2), n_layers=2, n_heads=2, head_dim=8,
                     intermediate=24, block=4, window=12)
    net = DFlashNet(c).eval()
    emb = torch.randn(32, 16)
    shard = D.Shard(torch.randint(0, 32, (60,)), torch.randint(0, 32, (60,)), torch.randn(60, 32).half())
    b = D.sample_batch([shard], 2, c.block, c.window, random.Random(3), anchors=5)
    with torch.no_grad():
        packed = net(net.block_input(b.first, emb), b.pos, net.context(b.feats, b.ctx_pos), b.ctx_mask)
        packed = packed.reshape(-1, c.block, 16)  # (B*M, K, hidden)
        starts = b.pos.reshape(-1, c.block)[:, 0].tolist()
        assert len(set(starts)) > 2  # several distinct blocks share a context
        for row, i in enumerate(starts):
            lo = max(0, i - c.window)
            feats = shard.feats[lo:i].float()[None]
            alone = net(net.block_input(shard.tokens[i : i + 1], emb), torch.arange(i, i + c.block)[None],
                        net.context(feats, torch.arange(lo, i)[None]))
            torch.testing.assert_close(packed[row], alone[0], atol=1e-5, rtol=1e-5)
            assert b.labels[row].tolist() == shard.labels[i : i + c.block - 1].tolist()


def test_draft_vocabulary_is_every_label_most_frequent_first():
    import torch

    shard = lambda labels: D.Shard(torch.zeros(len(labels), dtype=torch.long), torch.tensor(labels), torch.zeros(len(labels), 2))
    vocab = D.draft_vocabulary([shard([5, 9, 5, 2]), shard([9, 5, 7])])
    assert vocab.tolist()[:2] == [5, 9] and sorted(vocab.tolist()[2:]) == [2, 7]


def test_batch_must_be_a_multiple_of_anchors():
    with pytest.raises(ValueError, match="multiple of anchors"):
        TrainConfig(batch=10, anchors=4)


def test_per_suite_prompt_counts():
    from hvd.cli.train import suite_prompts

    assert suite_prompts("chat=5, code=2") == (("chat", 5), ("code", 2)) and suite_prompts("") == ()
    for bad in ("chat", "chat=0", "nope=3", "chat=x"):
        with pytest.raises(ValueError, match="--suite-prompts"):
            suite_prompts(bad)
    cfg = replace(DATA, suites=("code", "chat"), prompts_per_suite=2, suite_prompts=(("chat", 4),), stdlib_files=0)
    keys = [k for k, _ in D.sources(cfg)]
    assert sum(k.startswith("code:") for k in keys) == 2 and sum(k.startswith("chat:") for k in keys) == 4


def test_extra_sharegpt_conversations_come_last_and_only_on_request():
    cfg = replace(DATA, suites=("chat",), prompts_per_suite=2, stdlib_files=1)
    plain = [k for k, _ in D.sources(cfg)]
    keys = [k for k, _ in D.sources(replace(cfg, sharegpt_extra=3))]
    assert not any(k.startswith("sharegpt-extra:") for k in plain)
    assert keys[: len(plain)] == plain and all(k.startswith("sharegpt-extra:") for k in keys[len(plain):])
    assert len(keys) == len(plain) + 3


@pytest.mark.parametrize("bad", [dict(sharegpt_extra=-1), dict(regenerate=-1), dict(stdlib_files=-2),
                                 dict(prompts_per_suite=0), dict(suite_prompts=(("chat", -3),)),
                                 dict(max_len=0), dict(holdout_every=1)])
def test_data_config_rejects_bad_counts(bad):
    with pytest.raises(ValueError):
        D.DataConfig(**bad)
