"""Per-request drafter state for an engine that names its batch rows, not its requests.

vLLM's `custom_class` proposer (vLLM <= 0.33) is called each step with every row's token
history and no request ids, and rows move when requests finish. `RowStates` keeps one state per
request and finds it again by the history itself: a state matches a row whose tokens extend
the state's own (its prompt's first HEAD tokens, or all of a shorter prompt, hashed; its last
ones compared), and each state serves at most one row a step, so two requests with the same
prompt keep separate states. A state not seen for `idle_steps` calls is over (its request
finished) and is handed to `on_end`; at most `max_states` are kept (least recently seen first
out).
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

HEAD = 32  # tokens of a history's start that key its state
TAIL = 8  # tokens at the end of a state's history compared with the row's


@dataclass
class RowState:
    tokens: list[int]  # the history this state has seen (prompt + committed output)
    prompt_len: int
    value: Any  # the owner's per-request object (a drafter fork)
    last_seen: int = 0
    key: tuple = field(default=())


class RowStates:
    def __init__(self, make: Callable[[Sequence[int]], Any], on_end: Callable[[RowState], None],
                 idle_steps: int = 16, max_states: int = 1024) -> None:
        """`make(prompt)`: a new request's object; `on_end(state)`: a request is over."""
        self.make, self.on_end, self.idle_steps, self.max_states = make, on_end, idle_steps, max_states
        self._by_key: dict[tuple, list[RowState]] = {}
        self._lru: OrderedDict[int, RowState] = OrderedDict()
        self._claimed: set[int] = set()  # states serving a row this step
        self._short: Counter[int] = Counter()  # key lengths under HEAD (prompts that short) in use
        self.step = 0

    def __len__(self) -> int:
        return len(self._lru)

    def begin_step(self) -> None:
        self.step += 1
        self._claimed.clear()

    def find(self, history: Sequence[int], new: int) -> tuple[RowState, list[int]]:
        """The state of the request whose row holds `history` (the last `new` tokens just
        committed), and the tokens it has not seen yet; a new request's state (prompt: all but
        the last `new`) when none matches. `history` may be a numpy row: only its head, a known
        state's tail and the unseen tokens are read, so a step costs what is new, not the whole
        history."""
        head = _ints(history[:HEAD])
        for length in (HEAD, *(n for n in self._short if n < len(head))):
            for s in self._by_key.get(tuple(head[:length]), ()):
                n = len(s.tokens)
                if id(s) not in self._claimed and n <= len(history) and _ints(history[max(0, n - TAIL):n]) == s.tokens[-TAIL:]:
                    self._claim(s)
                    seen = _ints(history[n:])
                    s.tokens.extend(seen)
                    return s, seen
        prompt = _ints(history[: len(history) - new])
        s = RowState(prompt, len(prompt), self.make(prompt), key=tuple(prompt[:HEAD]))
        if len(s.key) < HEAD:
            self._short[len(s.key)] += 1
        self._by_key.setdefault(s.key, []).append(s)
        self._claim(s)
        seen = _ints(history[len(prompt):])
        s.tokens.extend(seen)
        self._evict(keep=s)
        return s, seen

    def end_step(self) -> None:
        """States idle for `idle_steps` calls are over."""
        for s in [s for s in self._lru.values() if self.step - s.last_seen > self.idle_steps]:
            self._drop(s)

    def _claim(self, s: RowState) -> None:
        self._claimed.add(id(s))
        s.last_seen = self.step
        self._lru.pop(id(s), None)
        self._lru[id(s)] = s

    def _evict(self, keep: Optional[RowState]) -> None:
        while len(self._lru) > self.max_states:
            oldest = next(iter(self._lru.values()))
            if oldest is keep:
                break
            self._drop(oldest)

    def _drop(self, s: RowState) -> None:
        self._lru.pop(id(s), None)
        group = self._by_key.get(s.key, [])
        if s in group:
            group.remove(s)
            if not group:
                del self._by_key[s.key]
            if len(s.key) < HEAD:
                self._short[len(s.key)] -= 1
                if not self._short[len(s.key)]:
                    del self._short[len(s.key)]
        self.on_end(s)


def _ints(tokens: Sequence[int]) -> list[int]:
    """A slice of a history as a list of Python ints (a numpy slice's `tolist`)."""
    return tokens.tolist() if hasattr(tokens, "tolist") else list(tokens)
