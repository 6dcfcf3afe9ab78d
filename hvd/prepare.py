"""`hvd prepare --model PATH`: build what every method needs for a model, once, cached by the
model's identity (hvd/assets.py). Each step is skipped when its output exists (resumable; a
crashed step leaves nothing half-written), `--force` redoes them, `--check` only reports.

  model         the GGUF converted and cached, the fast target checked exact on this machine
  classes       the tokens' character classes (an HVD feature)
  datastore     ADED's tri-gram table, counted over the training corpus with this tokenizer
  cost          verify-cost curves, chains and trees (how many draft tokens pay, here)
  traces        `ar` outputs of train-split prompts replayed through the hybrid (the predictor's data)
  predictor     the HVD predictor trained on them; held-out precision/recall printed
  drafter       only with --drafter: a DFlash drafter trained with the three losses (positional
                weighting, first-error focal, chain) on target features of train-split text;
                resumable from its last evaluation (slow on a CPU: see the README)

Without it hvd still runs any model with the shipped predictor (its features do not depend on
the vocabulary) and an empty datastore that adapts as it goes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from hvd.hybrid.trace import TraceConfig


@dataclass(frozen=True)
class PrepareConfig:
    trace_limit: int = 8  # train prompts per suite
    trace_tokens: int = 192  # new tokens per traced prompt
    force: bool = False
    corpus_chars: Optional[int] = None  # characters per datastore corpus source (None: CorpusConfig's)
    drafter: bool = False  # also train a DFlash drafter (the optional step)
    drafter_steps: int = 3000  # its optimizer steps
    drafter_texts: int = 60  # train-split sources per suite and standard-library files it learns from


@dataclass(frozen=True)
class StepState:
    name: str
    ready: bool
    where: str
    optional: bool = False  # built only when asked for (--drafter)


def status(engine) -> list[StepState]:
    """What is ready for the engine's model (the model step is ready once it loaded)."""
    from hvd.targets import verify_cost as cost
    from hvd.machine import cache_dir

    a = engine.stores.assets
    cost_ready = all(cost.path_for(engine.target, cache_dir(), tree).is_file() for tree in (False, True))
    return [
        StepState("model", True, f"{engine.target.precision} target"),
        StepState("classes", a.classes_path.is_file(), str(a.classes_path)),
        StepState("datastore", a.default or a.trigram_path.is_file(),
                  "shipped (default model)" if a.default else str(a.trigram_path)),
        StepState("cost", cost_ready, str(cost.path_for(engine.target, cache_dir()).parent)),
        StepState("traces", a.default or a.traces_path.is_file(), "shipped" if a.default else str(a.traces_path)),
        StepState("predictor", a.default or a.own_predictor() is not None,
                  "shipped (default model)" if a.default else str(a.predictor_path)),
        StepState("drafter", a.default or a.own_drafter() is not None,
                  "shipped (default model)" if a.default else f"{a.drafter_path} (optional: --drafter)", optional=True),
    ]


def run(engine, cfg: PrepareConfig, say: Callable[[str], None] = print) -> dict[str, float]:
    """Run the missing steps (all with `force`); returns seconds per step run."""
    done = {s.name: s.ready and not cfg.force for s in status(engine)}
    timings: dict[str, float] = {}
    for name, step in (("datastore", _datastore), ("cost", _cost), ("traces", _traces), ("predictor", _predictor),
                       ("drafter", _drafter)):
        if done[name]:
            say(f"  {name:<10} ready")
            continue
        if name == "drafter" and not cfg.drafter:
            continue
        t0 = time.perf_counter()
        detail = step(engine, cfg)
        timings[name] = time.perf_counter() - t0
        say(f"  {name:<10} done in {timings[name]:.0f} s{': ' + detail if detail else ''}")
    return timings


def _datastore(engine, cfg: PrepareConfig) -> str:
    from rich.progress import Progress

    from hvd.drafters.trigram_corpus import CorpusConfig
    from hvd.drafters.trigram_store import build

    corpus = CorpusConfig() if cfg.corpus_chars is None else CorpusConfig(max_chars=cfg.corpus_chars)
    total = corpus.max_chars * len(corpus.sources) if corpus.max_chars else None
    with Progress(transient=True) as bar:
        task = bar.add_task("datastore: tokenizing the corpus", total=total)
        report = build(engine.stores.assets.trigram_path, corpus, tokenizer=engine.tokenizer,
                       vocab=engine.target.vocab_size, tick=lambda n: bar.advance(task, n))
    return f"{report.tokens:,} tokens, {report.entries:,} tri-grams, {report.file_bytes / 1e6:.0f} MB"


def _cost(engine, cfg: PrepareConfig) -> str:
    from hvd.targets import verify_cost as cost
    from hvd.machine import cache_dir

    curves = [cost.cached(engine.target, cache_dir(), tree=tree) for tree in (False, True)]
    c = curves[0]
    return f"verify of {c.sizes[-1]} tokens costs {c.seconds[-1] / c.seconds[0]:.1f}x one"


def _traces(engine, cfg: PrepareConfig) -> str:
    from hvd.train.predictor import trace

    out = engine.stores.assets.traces_path
    tmp = out.with_name("traces.tmp.npz")
    t = trace(engine, TraceConfig(limit=cfg.trace_limit, max_new_tokens=cfg.trace_tokens), tmp, quiet=True)
    tmp.with_suffix(".classes.npy").rename(out.with_suffix(".classes.npy"))
    tmp.with_suffix(".json").rename(out.with_suffix(".json"))
    tmp.rename(out)  # last: its presence means the step is done
    return f"{len(t.y)} steps from {len(set(t.prompt.tolist()))} train prompts"


def _predictor(engine, cfg: PrepareConfig) -> str:
    from hvd.hybrid import predictor as P
    from hvd.train.predictor import train

    import shutil

    a = engine.stores.assets
    tmp = a.predictor_path.with_name("predictor.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    report = train(a.traces_path, tmp, P.TrainConfig(), quiet=True)
    shutil.rmtree(a.predictor_path, ignore_errors=True)
    tmp.rename(a.predictor_path)
    return (f"held-out precision {report['precision']:.2f}, recall {report['recall']:.2f} "
            f"(accepted >= {report['threshold']:g}, {report['held_out_steps']} steps)")


def _drafter(engine, cfg: PrepareConfig) -> str:
    from hvd.train.data import DataConfig
    from hvd.train.drafter import TrainConfig, train

    a = engine.stores.assets
    n = cfg.drafter_texts
    train_cfg = TrainConfig(steps=cfg.drafter_steps, eval_every=min(TrainConfig().eval_every, cfg.drafter_steps))
    report = train(engine, a.drafter_path, train_cfg,
                   DataConfig(prompts_per_suite=n, regenerate=cfg.trace_tokens, stdlib_files=n),
                   work=a.directory / "drafter-work", log=lambda _: None)
    return f"{report['steps']} steps on {report['sequences']} sequences, held-out τ {report['held_out_tau']:.2f}"


def describe(states: list[StepState]) -> str:
    width = max(len(s.name) for s in states)
    return "\n".join(f"  {s.name:<{width}}  {'ready  ' if s.ready else 'missing'}  {s.where}" for s in states)


def missing(states: list[StepState], drafter: bool = False) -> list[str]:
    """The steps still to run (the optional drafter only when asked for)."""
    return [s.name for s in states if not s.ready and (drafter or not s.optional)]

