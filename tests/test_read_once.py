"""read_once: one load per file version, shared; a rewritten file is read again."""
import os

import pytest

from hvd.read_once import read_once


def test_loads_once_per_version(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    calls = []
    load = lambda p: calls.append(p) or p.read_text()
    assert read_once(load, f) == "one" and read_once(load, str(f)) == "one" and len(calls) == 1
    f.write_text("two!")
    os.utime(f, ns=(1, 1))  # a new version even within the clock's resolution
    assert read_once(load, f) == "two!" and len(calls) == 2
    with pytest.raises(OSError):
        read_once(load, tmp_path / "missing")


def test_directory_versioned_by_its_stamp_file(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"x")
    calls = []
    load = lambda p: calls.append(p) or sorted(x.name for x in p.iterdir())
    first = read_once(load, tmp_path, stamp=tmp_path / "w.bin")
    (tmp_path / "other").write_text("not the stamp")
    assert read_once(load, tmp_path, stamp=tmp_path / "w.bin") is first and len(calls) == 1
