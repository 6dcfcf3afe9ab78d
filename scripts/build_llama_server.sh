#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (the agent-loop benchmark's peer) from the llama.cpp that
# the llama-cpp-python sdist vendors: the same llama.cpp the bench's in-process peer runs.
# Optional; ~10 minutes on 2 cores. Usage: scripts/build_llama_server.sh [PREFIX]
# Built for this machine's CPU (GGML_NATIVE=ON: AVX-512 and VNNI where it has them), as a user
# who runs it here would; GGML_NATIVE=OFF builds the portable AVX2 binary instead.
# The binary lands in PREFIX/bin/llama-server (default PREFIX: ${HVD_CACHE:-~/.cache/hvd}/llama-server).
set -euo pipefail
VERSION=0.3.36
PREFIX=${1:-${HVD_CACHE:-$HOME/.cache/hvd}/llama-server}
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
command -v cmake >/dev/null || "$PY" -m pip install -q cmake
"$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
CMAKE=$(command -v cmake || echo "$("$PY" -c 'import cmake,os;print(os.path.join(cmake.CMAKE_BIN_DIR,"cmake"))')")
"$CMAKE" -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE="${GGML_NATIVE:-ON}" -DGGML_AVX2=ON \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
"$CMAKE" --build "$WORK/build" --target llama-server -j "$(nproc)"
mkdir -p "$PREFIX/bin"
cp "$WORK/build/bin/llama-server" "$PREFIX/bin/"
echo "$PREFIX/bin/llama-server"
