"""Read-only artifacts (tri-gram datastores, the HVD predictor) read once per file version.

Every fresh drafter over the same file shares one loaded copy; a file rewritten on disk (a
new mtime or size of its `stamp`) is read again.
"""
from __future__ import annotations

import functools
from os import PathLike
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

T = TypeVar("T")


def read_once(load: Callable[[Path], T], path: Union[str, PathLike], stamp: Optional[Path] = None) -> T:
    """`load(path)`, cached per version of `stamp` (default: `path` itself; for a directory,
    the file whose change means a new version). Raises OSError when `stamp` is missing."""
    p = Path(path).resolve()
    st = (stamp if stamp is not None else p).stat()
    return _cached(load, str(p), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _cached(load: Callable[[Path], T], path: str, mtime_ns: int, size: int) -> T:
    return load(Path(path))
