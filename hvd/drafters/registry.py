"""The one place that lists decoding methods. `ar` is plain decoding: no drafter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from hvd.drafters.base import Drafter


@dataclass(frozen=True)
class Method:
    name: str
    help: str
    make: Optional[Callable[[], Drafter]]  # None: no drafter (plain autoregressive decoding)


def _pld() -> Drafter:
    from hvd.drafters.pld import PromptLookupDrafter

    return PromptLookupDrafter()


def _suffix() -> Drafter:
    from hvd.drafters.suffix import SuffixDrafter

    return SuffixDrafter()


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ar", "plain autoregressive decoding, the baseline", None),
        Method("pld", "prompt lookup: copy after the latest n-gram match in prompt + output", _pld),
        Method("suffix", "suffix trees over this request and earlier responses (SuffixDecoding)", _suffix),
    )
}


class UnknownMethodError(ValueError):
    pass


def get(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
    return METHODS[name]
