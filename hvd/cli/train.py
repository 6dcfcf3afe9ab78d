"""`hvd train predictor` (the HVD accepted-length predictor, on traces) and `hvd train drafter`
(the DFlash block drafter; the loop is hvd/train/drafter.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hvd.cli.args import CliError, Parser, add_model_args, load_engine, non_negative_int, positive_int

LOSSES = ("weighting", "focal", "chain")


def add_parser(sub) -> None:
    from hvd.train.predictor import DEFAULT_TRACES

    train = sub.add_parser("train", help="train a component").add_subparsers(dest="what", required=True,
                                                                             parser_class=Parser)
    pr = train.add_parser("predictor", help="fit the HVD accepted-length predictor on traces")
    pr.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    pr.add_argument("--out", type=Path, default=None, help="artifact directory (default: the packaged predictor)")
    pr.add_argument("--epochs", type=positive_int, default=50)
    pr.add_argument("--threshold", type=float, default=6.0, help="report precision/recall of accepted >= this")
    _add_drafter_parser(train)


def run(a: argparse.Namespace) -> None:
    {"predictor": _train_predictor, "drafter": _train_drafter}[a.what](a)


def _train_predictor(a: argparse.Namespace) -> None:
    from hvd.hybrid import predictor as P
    from hvd.train.predictor import train

    if not a.traces.is_file():
        raise CliError(f"no traces at {a.traces}; record them with `hvd trace`")
    train(a.traces, a.out or P.DEFAULT_DIR, P.TrainConfig(epochs=a.epochs), a.threshold)


def _train_drafter(a: argparse.Namespace) -> None:
    try:
        drafter(a, load_engine(a.model, threads=a.threads, dtype=a.dtype))
    except ValueError as e:
        raise CliError(str(e)) from e


def _add_drafter_parser(train_sub) -> None:
    from hvd.drafters.dflash import CHECKPOINTS
    from hvd.train.data import DataConfig
    from hvd.train.drafter import TrainConfig

    t, d = TrainConfig(), DataConfig()
    p = train_sub.add_parser("drafter", help="train the DFlash block drafter for the target (train split only)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--uniform", action="store_true", help="position-uniform CE only (the dflash-uniform baseline)")
    g.add_argument("--losses", default=",".join(LOSSES),
                   help=f"comma list of loss terms on top of CE, from {','.join(LOSSES)} (default: all)")
    p.add_argument("--steps", type=positive_int, default=t.steps)
    p.add_argument("--batch", type=positive_int, default=t.batch)
    p.add_argument("--anchors", type=positive_int, default=t.anchors,
                   help="blocks drawn per sequence, sharing one context (--batch must be a multiple)")
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--eval-every", type=positive_int, default=t.eval_every)
    p.add_argument("--layers", type=positive_int, default=t.n_layers, help="drafter layers")
    p.add_argument("--block", type=positive_int, default=t.block, help="K: block size (K-1 drafted tokens)")
    p.add_argument("--window", type=positive_int, default=t.window, help="committed tokens the block attends to")
    p.add_argument("--fp32", action="store_true", help="train in plain fp32 (default: bf16 autocast)")
    p.add_argument("--regenerate", type=non_negative_int, default=d.regenerate,
                   help="target greedy tokens appended to each train prompt (0: prompts only)")
    p.add_argument("--prompts-per-suite", type=positive_int, default=None)
    p.add_argument("--suite-prompts", default="",
                   help="per-suite train prompt counts overriding --prompts-per-suite, e.g. chat=200,code=80")
    p.add_argument("--stdlib-files", type=positive_int, default=d.stdlib_files)
    p.add_argument("--sharegpt-extra", type=positive_int, default=d.sharegpt_extra,
                   help="ShareGPT conversations past the chat suite's (never bench items), each followed by the "
                        "target's regeneration: more target-written chat")
    p.add_argument("--work", type=Path, default=None,
                   help="feature cache and resumable state (default: $HVD_CACHE/dflash/<model key>)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"checkpoint directory (default: the packaged {CHECKPOINTS}/dflash, or dflash-uniform)")
    add_model_args(p)


def loss_config(a: argparse.Namespace):
    from hvd.train.losses import LossConfig

    if a.uniform:
        return LossConfig.uniform()
    chosen = {s.strip() for s in a.losses.split(",") if s.strip()}
    unknown = chosen - set(LOSSES)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; choose from {','.join(LOSSES)}")
    return LossConfig(weighting="weighting" in chosen, focal="focal" in chosen, chain="chain" in chosen)


def suite_prompts(spec: str) -> tuple[tuple[str, int], ...]:
    """"chat=200,code=80" -> (("chat", 200), ("code", 80)); a clear ValueError otherwise."""
    from hvd.train.data import TRAIN_SUITES

    out = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, count = item.partition("=")
        if name not in TRAIN_SUITES or not count.isdigit() or int(count) <= 0:
            raise ValueError(f"--suite-prompts: expected SUITE=N with N > 0 and SUITE one of "
                             f"{','.join(TRAIN_SUITES)}, got {item!r}")
        out.append((name, int(count)))
    return tuple(out)


def drafter(a: argparse.Namespace, engine) -> dict:
    from hvd.drafters.dflash import CHECKPOINTS
    from hvd.train.data import DataConfig
    from hvd.train.drafter import TrainConfig, train

    losses = loss_config(a)
    out = a.out or CHECKPOINTS / ("dflash-uniform" if a.uniform else "dflash")
    cfg = TrainConfig(steps=a.steps, batch=a.batch, anchors=a.anchors, lr=a.lr, seed=a.seed, eval_every=a.eval_every,
                      losses=losses,
                      n_layers=a.layers, block=a.block, window=a.window, bf16=not a.fp32)
    data = DataConfig(prompts_per_suite=a.prompts_per_suite, suite_prompts=suite_prompts(a.suite_prompts),
                      regenerate=a.regenerate, stdlib_files=a.stdlib_files,
                      sharegpt_extra=a.sharegpt_extra)
    report = train(engine, out, cfg, data, a.work)
    print(json.dumps({k: report[k] for k in ("steps", "held_out_tau", "sequences", "seconds")}))
    print(f"drafter saved to {out}")
    return report
