"""The default tri-gram datastore: built once from the training corpus with the default model's
tokenizer (SmolLM2, vocabulary 49152), cached as ``$HVD_CACHE/datastores/<name>.npz``.

`hvd datastore build` builds it explicitly; otherwise the first `aded` drafter for a target
with the default vocabulary builds it (a one-time cost; see `build`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hvd.data.prompts import SuiteDataError
from hvd.drafters import trigram
from hvd.drafters.trigram import TrigramTable
from hvd.drafters.trigram_corpus import CorpusConfig, corpus_texts
from hvd.errors import ModelError

DEFAULT_VOCAB = 49152  # SmolLM2's tokenizer
VERSION = 1  # bump when the corpus or the counting changes: old caches are then rebuilt
TOP_K = 12
BATCH_CHARS = 1 << 20  # texts are tokenized in batches of about this many characters


@dataclass(frozen=True)
class BuildReport:
    path: Path
    seconds: float
    tokens: int
    bigrams: int
    entries: int
    file_bytes: int


def default_path() -> Path:
    from hvd.machine import cache_dir

    return cache_dir() / "datastores" / f"trigram-smollm2-v{VERSION}.npz"


def _tokenizer():
    from transformers import AutoTokenizer

    from hvd.targets import loader

    loader.quiet_transformers()
    return AutoTokenizer.from_pretrained(str(loader.local_model_dir(loader.resolve(None))), local_files_only=True)


def build(out: Optional[Path] = None, corpus: CorpusConfig = CorpusConfig(), top_k: int = TOP_K,
          tokenizer=None, vocab: int = DEFAULT_VOCAB, tick=lambda chars: None) -> BuildReport:
    """Tokenize the corpus, count tri-grams, save the table to `out` (default: the cache).
    `tokenizer` and `vocab`: another model's (default: the default model's); `tick(chars)`
    after each tokenized batch (progress)."""
    t0 = time.perf_counter()
    out = Path(out) if out is not None else default_path()
    tok = tokenizer if tokenizer is not None else _tokenizer()
    if len(tok) > vocab:
        raise ValueError(f"tokenizer has {len(tok)} ids; the datastore expects at most {vocab}")
    sequences: list[list[int]] = []
    chars: dict[str, int] = {}
    batch: list[str] = []

    def flush() -> None:
        if batch:
            sequences.extend(tok(batch, add_special_tokens=False)["input_ids"])
            tick(sum(map(len, batch)))
            batch.clear()

    for source, text in corpus_texts(corpus):
        chars[source] = chars.get(source, 0) + len(text)
        batch.append(text)
        if sum(map(len, batch)) >= BATCH_CHARS:
            flush()
    flush()
    table = trigram.count_trigrams(sequences, vocab, top_k)
    n_tokens = sum(len(s) for s in sequences)
    name = "SmolLM2-135M-Instruct" if tokenizer is None else getattr(tok, "name_or_path", "")
    meta = {"tokenizer": name, "version": str(VERSION), "tokens": str(n_tokens),
            "top_k": str(top_k), **{f"chars_{k}": str(v) for k, v in chars.items()}}
    table = TrigramTable(table.vocab, table.keys, table.offsets, table.succ, table.weight, meta)
    trigram.save(table, out)
    return BuildReport(out, time.perf_counter() - t0, n_tokens, table.n_bigrams, table.n_entries, out.stat().st_size)


def table_for(vocab: int, assets=None) -> TrigramTable:
    """The model's own datastore (hvd/assets.py, `hvd prepare`), else `default_table`."""
    own = assets.own_trigrams() if assets is not None else None
    return trigram.load_shared(own) if own is not None else default_table(vocab)


def default_table(vocab: int) -> TrigramTable:
    """The default datastore for a target with this vocabulary size (built and cached on first
    use), or an empty table when the vocabulary is not the default model's. ModelError (one
    line) where it is not built and cannot be here: its corpus and tokenizer are hvd's data and
    model packages (absent from an install of hvd into another project's environment)."""
    if vocab != DEFAULT_VOCAB:
        return TrigramTable.empty(vocab)
    path = default_path()
    if not path.is_file():
        print("hvd: building the aded tri-gram datastore (once, ~30 s)...", file=sys.stderr)
        try:
            build(path)
        except (SuiteDataError, ModelError, OSError) as e:
            raise ModelError(f"ADED's tri-gram datastore is not built ({path}) and cannot be here: {e}") from None
    return trigram.load_shared(path)
