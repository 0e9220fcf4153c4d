#!/usr/bin/env bash
# Runs the whole benchmark: in-process timings, then every server twice.
# Options are passed to scripts/run_bench.py (e.g. --only kserve-inplace --runs 1).
# BENCH_ARTIFACTS=artifacts/fraud: every server loads our fraud bundle instead of the reference
# model (what ./run_fraud.sh does; build it first with scripts/prepare_fraud.py).
set -euo pipefail
cd "$(dirname "$0")"
export BENCH_ARTIFACTS=${BENCH_ARTIFACTS:-artifacts}
[ -x .venv/kserve/bin/python ] && [ -x .venv/mlflow/bin/python ] && [ -f artifacts/model.ubj ] || ./setup.sh
command -v wrk >/dev/null || ./setup.sh
[ -f "$BENCH_ARTIFACTS/expected.json" ] || { echo "no $BENCH_ARTIFACTS/expected.json (run ./run_fraud.sh or scripts/prepare_fraud.py)"; exit 1; }
mkdir -p out
mv -f out/results.jsonl "out/results.$(date +%Y%m%d-%H%M%S).jsonl" 2>/dev/null || true
# in-process numbers (no HTTP), server core only
taskset -c "${SERVER_CPU:-1}" env OMP_NUM_THREADS=1 .venv/kserve/bin/python scripts/inproc.py core > out/inproc_core.json
taskset -c "${SERVER_CPU:-1}" env OMP_NUM_THREADS=1 .venv/mlflow/bin/python scripts/inproc.py mlflow > out/inproc_mlflow.json
python3 scripts/run_bench.py "$@"
python3 scripts/report.py > out/table.md
echo "table: out/table.md"
