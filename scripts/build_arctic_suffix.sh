#!/usr/bin/env bash
# Build ONLY ArcticInference's suffix-decoding extension (csrc/suffix_decoding: a C++ suffix
# tree bound with nanobind) from the arctic-inference sdist, for scripts/arctic_suffix_replay.py.
# No torch / CUDA / vLLM: the sdist's setup.py is not run; its CMakeLists for the one module is.
# Optional peer measurement; ~1-2 minutes on 1 core. Idempotent: skips if already built.
# Usage: scripts/build_arctic_suffix.sh [PREFIX]
#   PREFIX default: ${HVD_CACHE:-~/.cache/hvd}/arctic_suffix
# Result: PREFIX/arctic_inference/suffix_decoding/{__init__.py,cache.py,_C.*.so}; use with
#   PYTHONPATH=PREFIX python -c 'from arctic_inference.suffix_decoding import SuffixDecodingCache'
set -euo pipefail
VERSION=${ARCTIC_VERSION:-0.3.0}
NANOBIND_VERSION=2.9.2   # the sdist's build-system pin
PREFIX=${1:-${HVD_CACHE:-$HOME/.cache/hvd}/arctic_suffix}
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
[ -x "$PY" ] || PY=python3
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
PKG="$PREFIX/arctic_inference/suffix_decoding"

if [ -f "$PREFIX/.built-$VERSION" ] && \
   PYTHONPATH="$PREFIX" "$PY" -c 'from arctic_inference.suffix_decoding import SuffixDecodingCache' 2>/dev/null; then
  echo "already built: $PKG (arctic-inference $VERSION)"
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
  "arctic-inference==$VERSION" -d "$WORK"
tar xzf "$WORK/arctic_inference-$VERSION.tar.gz" -C "$WORK"
SRC="$WORK/arctic_inference-$VERSION"
# nanobind goes into the scratch dir, not the venv (pure-Python wheel: headers + cmake files).
"$PY" -m pip install -q --no-deps --target "$WORK/nb" "nanobind==$NANOBIND_VERSION"
CMAKE=$(command -v cmake || true)
if [ -z "$CMAKE" ]; then
  "$PY" -m pip install -q --target "$WORK/cm" "cmake==3.31.6"
  CMAKE="$WORK/cm/bin/cmake"
fi
PYTHONPATH="$WORK/nb" "$CMAKE" -S "$SRC/csrc/suffix_decoding" -B "$WORK/build" \
  -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$WORK/out" >/dev/null
PYTHONPATH="$WORK/nb" CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-1} "$CMAKE" --build "$WORK/build"

rm -rf "$PREFIX/arctic_inference"
mkdir -p "$PKG"
: > "$PREFIX/arctic_inference/__init__.py"
cp "$SRC/arctic_inference/suffix_decoding/__init__.py" "$SRC/arctic_inference/suffix_decoding/cache.py" "$PKG/"
cp "$WORK"/out/_C*.so "$PKG/"
cp "$SRC/LICENSE" "$PREFIX/arctic_inference/LICENSE"
PYTHONPATH="$PREFIX" "$PY" -c 'from arctic_inference.suffix_decoding import SuffixDecodingCache'
touch "$PREFIX/.built-$VERSION"
echo "built: $PKG (arctic-inference $VERSION); use PYTHONPATH=$PREFIX"
