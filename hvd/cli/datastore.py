"""`hvd datastore build`: the tri-gram datastore of aded."""
from __future__ import annotations

import argparse
from pathlib import Path

from hvd.cli.args import Parser, positive_int


def add_parser(sub) -> None:
    ds = sub.add_parser("datastore", help="the tri-gram datastore of aded").add_subparsers(dest="what", required=True, parser_class=Parser)
    b = ds.add_parser("build", help="count tri-grams over the training corpus (train split only) with the default tokenizer")
    b.add_argument("--out", type=Path, default=None, help="output .npz (default: the cache file aded loads)")
    b.add_argument("--limit", type=positive_int, default=None, help="characters per corpus source (default 8,000,000)")


def run(a: argparse.Namespace) -> None:
    from hvd.drafters.trigram_corpus import CorpusConfig
    from hvd.drafters.trigram_store import build

    r = build(a.out, CorpusConfig() if a.limit is None else CorpusConfig(max_chars=a.limit))
    print(f"{r.path}: {r.tokens:,} tokens, {r.bigrams:,} bigrams, {r.entries:,} tri-grams kept, "
          f"{r.file_bytes / 1e6:.1f} MB, built in {r.seconds:.1f} s")
