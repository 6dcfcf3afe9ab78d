"""`hvd train drafter`: train a DFlash block drafter for the engine's target.

Steps: (1) build the feature cache (train split only, see `data.py`); (2) AdamW with linear
warm-up then cosine decay over random anchor blocks; every `eval_every` steps the held-out τ
(1 + leading correct predictions per block, on held-out sequences) and a resumable checkpoint;
(3) the drafter (`dflash.safetensors` + `dflash.json`) in `out`. The feature cache and the
training state live in a work directory (default `$HVD_CACHE/dflash/<model key>`), never in
the package.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from hvd.drafters import dflash
from hvd.drafters.dflash_model import DFlashConfig, DFlashNet, spread_layers
from hvd.train import data as D
from hvd.train.losses import LossConfig, block_loss, block_tau

STATE_FILE = "train_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch: int = 64  # blocks per step
    anchors: int = 16  # blocks per sampled sequence, sharing one context (batch must be a multiple)
    lr: float = 1e-3
    warmup: float = 0.015  # fraction of steps
    weight_decay: float = 0.01
    seed: int = 0
    eval_every: int = 200
    eval_blocks: int = 256
    losses: LossConfig = field(default_factory=LossConfig)
    n_layers: int = 2
    block: int = 16
    window: int = 256
    n_target_layers: int = 4
    bf16: bool = True  # bf16 autocast for the forward (cheaper with bf16 units); weights and AdamW stay fp32

    def __post_init__(self) -> None:
        if self.anchors <= 0 or self.batch % self.anchors:
            raise ValueError(f"batch ({self.batch}) must be a positive multiple of anchors ({self.anchors})")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 0."""
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def net_config(target, cfg: TrainConfig) -> DFlashConfig:
    w = target.shared_weights()
    return DFlashConfig(
        hidden=w.embedding.shape[1], vocab=w.embedding.shape[0],
        target_layers=spread_layers(w.num_layers, cfg.n_target_layers), n_layers=cfg.n_layers,
        n_heads=w.heads, head_dim=w.embedding.shape[1] // w.heads, intermediate=w.intermediate,
        block=cfg.block, window=cfg.window, rope_theta=w.rope_theta, eps=w.rms_norm_eps)


def _logits(net: DFlashNet, b: D.Batch, weights, bf16: bool) -> torch.Tensor:
    """Logits (B*M, K−1, vocab); `weights` already in the compute dtype (see `train`)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ctx = net.context(b.feats, b.ctx_pos)
        x = net.block_input(b.first, weights.embedding)  # (B, M*K, hidden)
        h = net(x, b.pos, ctx, b.ctx_mask)  # (B, M*K, hidden)
        h = h.reshape(-1, net.c.block, h.shape[-1])[:, 1:]  # (B*M, K−1, hidden)
        return h @ weights.head.t()  # (B*M, K−1, vocab)


@torch.no_grad()
def evaluate(net: DFlashNet, shards: list[D.Shard], weights, cfg: TrainConfig, seed: int = 1234) -> float:
    """Mean block τ on `eval_blocks` fixed random blocks of the held-out shards."""
    net.eval()
    rng, taus = random.Random(seed), []
    for i in range(0, cfg.eval_blocks, cfg.batch):
        b = D.sample_batch(shards, min(cfg.batch, cfg.eval_blocks - i), cfg.block, cfg.window, rng)
        taus.append(block_tau(_logits(net, b, weights, cfg.bf16), b.labels).float())
    net.train()
    return float(torch.cat(taus).mean())


def work_dir(target) -> Path:
    from hvd.machine import cache_dir

    return cache_dir() / "dflash" / target.fingerprint


def train(engine, out: Path, cfg: TrainConfig, data_cfg: D.DataConfig, work: Optional[Path] = None,
          log=print) -> dict:
    """Train and save a drafter under `out`; resumes from `work/<out name>-train_state.pt`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    torch.manual_seed(cfg.seed)
    target = engine.target
    weights = target.shared_weights()
    if cfg.bf16:  # cast the frozen head once, not at every step under autocast
        weights = replace(weights, head=weights.head.to(torch.bfloat16))
    ncfg = net_config(target, cfg)
    work = work or work_dir(target)
    cache = work / "features"
    t0 = time.perf_counter()
    log(f"feature cache {cache} (layers {list(ncfg.target_layers)})")
    with Progress(TextColumn("{task.description}"), TextColumn("{task.completed} sequences"), transient=True) as bar:
        task = bar.add_task("target features (greedy continuations, hidden states)", total=None)
        names = D.build_cache(engine, data_cfg, ncfg.target_layers, cache, progress=lambda k: bar.advance(task))
    shards = D.load_shards(cache)
    held = [s for i, s in enumerate(shards) if i % data_cfg.holdout_every == data_cfg.holdout_every - 1]
    fit = [s for i, s in enumerate(shards) if i % data_cfg.holdout_every != data_cfg.holdout_every - 1] or shards
    held = held or shards
    log(f"{len(names)} sequences, {sum(s.tokens.shape[0] for s in shards)} tokens, "
        f"{len(held)} held out; cache built in {time.perf_counter() - t0:.0f}s")

    net = DFlashNet(ncfg).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng, start, history = random.Random(cfg.seed), 0, []
    state_path = work / f"{out.name}-{STATE_FILE}"
    if state_path.is_file():
        st = torch.load(state_path, weights_only=False)
        if (st["net_config"], st["train_config"], st.get("data_config")) == (asdict(ncfg), asdict(cfg), asdict(data_cfg)):
            net.load_state_dict(st["net"])
            opt.load_state_dict(st["opt"])
            rng.setstate(st["rng"])
            torch.set_rng_state(st["torch_rng"])
            start, history = st["step"], st["history"]
            log(f"resumed at step {start}")
        else:
            log("train_state.pt is for another configuration (model, training or data): starting over")
    tau = history[-1]["tau"] if history else float("nan")
    parts: dict = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task("training", total=cfg.steps, completed=start)
        for step in range(start, cfg.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            b = D.sample_batch(fit, cfg.batch // cfg.anchors, cfg.block, cfg.window, rng, cfg.anchors)
            loss, parts = block_loss(_logits(net, b, weights, cfg.bf16), b.labels, cfg.losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            loss, done = float(loss.detach()), step + 1
            if done % cfg.eval_every == 0 or done == cfg.steps:
                tau = evaluate(net, held, weights, cfg)
                history.append({"step": done, "loss": float(loss), "tau": tau, **parts})
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "rng": rng.getstate(),
                            "torch_rng": torch.get_rng_state(), "step": done, "history": history,
                            "net_config": asdict(ncfg), "train_config": asdict(cfg),
                            "data_config": asdict(data_cfg)}, state_path)
            bar.update(task, completed=done, description=f"loss {float(loss):.3f} held-out τ {tau:.2f}")
    report = {"steps": cfg.steps, "held_out_tau": tau, "history": history, "train": asdict(cfg),
              "data": asdict(data_cfg), "sequences": len(shards), "seconds": round(time.perf_counter() - t0, 1)}
    dflash.save(net, out, {"training": report}, vocab=D.draft_vocabulary(fit))
    return report
