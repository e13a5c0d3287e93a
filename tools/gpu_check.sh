#!/usr/bin/env bash
# The GPU check (make gpu-check), for a bare GPU machine whose Python has torch >= 2.4 and
# torchvision but none of the study's other pins: the library is imported from lib/ (nothing
# installed), nothing is downloaded. Writes results/bench_gpu.md (--out PATH or
# FGVC_GPU_CHECK_OUT); prints one line and exits 0 where there is no CUDA GPU.
#   tools/gpu_check.sh [--steps 200] [--max-s 12] [--sections methods,throughput,torchrun] [--dry-run]
# PYTHON picks the interpreter (default: python3). Options: tools/gpu_check.sh --help.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
exec "${PYTHON:-python3}" -m fgvc.dev.gpu_check "$@"
