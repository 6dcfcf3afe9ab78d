"""How the C kernels are built (hvd/targets/native.py): one library from kernels.c and the files it
includes, keyed by a build id that covers every one of them, all shipped with the package."""
import fnmatch
import re
import shutil
import tomllib
from pathlib import Path

from hvd.targets import native

HERE = native.SOURCE.parent


def included(path: Path) -> set[Path]:
    """path and every file it #includes with quotes, transitively."""
    found = {path}
    for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(), flags=re.M):
        found |= included(path.parent / name)
    return found


def test_sources_are_the_translation_unit_and_everything_it_includes():
    sources = set(native.SOURCES)
    assert len(sources) == len(native.SOURCES)
    assert native.SOURCES[0] == native.SOURCE
    assert sources == included(native.SOURCE)
    assert sources == set(HERE.glob("kernels*.c")) | set(HERE.glob("kernels*.h"))


def test_build_id_changes_with_every_source_and_the_compiler(tmp_path):
    copies = tuple(Path(shutil.copy(p, tmp_path / p.name)) for p in native.SOURCES)
    base = native.build_id("cc 1", copies)
    assert native.build_id("cc 1", copies) == base
    assert native.build_id("cc 2", copies) != base
    for path in copies:
        text = path.read_bytes()
        path.write_bytes(text + b"\n")
        assert native.build_id("cc 1", copies) != base, path.name
        path.write_bytes(text)
    assert native.build_id("cc 1", copies) == base


def test_package_data_ships_every_source():
    config = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["hvd"]
    package = HERE.parent
    for path in native.SOURCES:
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel
