"""`hvd prepare`: build what every method needs for a model; resumable."""
from __future__ import annotations

import argparse
import time

from hvd.cli.args import add_model_args, load_engine, positive_int


def add_parser(sub) -> None:
    from hvd.prepare import PrepareConfig

    d = PrepareConfig()
    p = sub.add_parser("prepare", help="build what every method needs for a model (datastore, cost curves, "
                                       "traces, predictor), cached by the model's identity; resumable")
    add_model_args(p)
    p.add_argument("--check", action="store_true", help="only say what is ready and what is missing")
    p.add_argument("--force", action="store_true", help="redo every step")
    p.add_argument("--trace-limit", type=positive_int, default=d.trace_limit, help=f"train prompts per suite traced "
                                                                          f"(default {d.trace_limit})")
    p.add_argument("--trace-tokens", type=positive_int, default=d.trace_tokens, help=f"new tokens per traced prompt "
                                                                            f"(default {d.trace_tokens})")
    p.add_argument("--corpus-chars", type=positive_int, default=None, help="characters per datastore corpus source "
                                                                 "(default 8,000,000)")
    p.add_argument("--drafter", action="store_true", help="also train a DFlash drafter for `dflash` (slow on a CPU: "
                                                           "hours for 3000 steps; resumable)")
    p.add_argument("--drafter-steps", type=positive_int, default=d.drafter_steps, help=f"its optimizer steps (default "
                                                                              f"{d.drafter_steps})")
    p.add_argument("--drafter-texts", type=positive_int, default=d.drafter_texts, help=f"train prompts per suite and library "
                                                                              f"files it learns from (default {d.drafter_texts})")


def run(a: argparse.Namespace) -> None:
    from hvd import prepare

    t0 = time.perf_counter()
    engine = load_engine(a.model, threads=a.threads, dtype=a.dtype)
    assets = engine.stores.assets
    print(f"{assets.key} ({engine.target.precision}, loaded in {time.perf_counter() - t0:.0f} s); parts in {assets.directory}")
    if a.check:
        states = prepare.status(engine)
        print(prepare.describe(states))
        missing = prepare.missing(states, a.drafter)
        flags = (" --model " + a.model if a.model else "") + (" --drafter" if a.drafter else "")
        print(f"missing: {', '.join(missing)} (run: hvd prepare{flags})" if missing
              else "ready: hvd uses this model's own predictor and datastore")
        return
    prepare.run(engine, prepare.PrepareConfig(a.trace_limit, a.trace_tokens, a.force, a.corpus_chars, a.drafter,
                                              a.drafter_steps, a.drafter_texts))
    print(f"prepared in {time.perf_counter() - t0:.0f} s: `hvd generate --model {a.model or 'smollm2-135m'}` now "
          "runs hvd with this model's own predictor")
