#!/usr/bin/env bash
# make mutate: mutation testing with mutmut 3 (not in CI) of lib/fgvc/layers/ and the forward and
# loss code of lib/fgvc/methods/ ([tool.mutmut] in pyproject.toml), then the report
# (python -m fgvc.dev.mutation) into $MUTATION_OUT (make mutate: results/mutation.md; unset: scratch/results/). Runs in build/mutate/, a copy of the package
# under src/ with the tests and configs: mutmut derives module names from file paths and strips
# only "src.", so lib/ itself would give it names ("lib.fgvc...") the tests never import.
#   tools/mutate.sh [mutmut name pattern, e.g. 'fgvc.layers.erase*']
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
# absolute, since the run below changes directory (make passes a relative .venv/bin/python)
py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"
work="$root/build/mutate"
"$py" -m pip install --quiet "mutmut==3.8.1"
rm -rf "$work/src" "$work/tests" "$work/configs" "$work/results"
mkdir -p "$work/src"
cp -r "$root/lib/fgvc" "$work/src/"
cp -r "$root/tests" "$root/configs" "$root/pyproject.toml" "$root/conftest.py" "$work/"
# the committed run records: the method tests check that their configs still hash as recorded
mkdir -p "$work/results" && cp -r "$root/results/runs" "$work/results/"
find "$work" -name __pycache__ -prune -exec rm -rf {} +
cd "$work"
# one thread per forked test process (torch's OpenMP pool does not survive fork)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1
start=$(date +%s)
"$py" -m mutmut run --max-children "${MUTATE_JOBS:-2}" "$@" || true
seconds=$(( $(date +%s) - start ))
"$py" -m mutmut results --all true > "$work/results.txt" || true
cd "$root"
exec "$py" -m fgvc.dev.mutation "$work/results.txt" --work "$work" --seconds "$seconds" \
  ${MUTATION_OUT:+--out "$MUTATION_OUT"}
