#!/usr/bin/env bash
# Our server side by side with the peers, all serving the project's fraud booster (issue 6).
#   1. peer venvs, wrk, reference model: ./setup.sh (skipped when done);
#   2. artifacts/fraud (simulated data, features, online store, bundle, exports, payloads):
#      scripts/prepare_fraud.py with the project venv (skipped when done; PREPARE=1 rebuilds);
#   3. ./run.sh with BENCH_ARTIFACTS=artifacts/fraud: in-process timings, then mlflow,
#      kserve-inplace, kserve-const, ours, ours-nobatch, ours-shadow, each run twice -> out/table.md.
# Options go to scripts/run_bench.py and override these defaults, e.g.
#   ./run_fraud.sh --runs 1 --duration 5 --batch-duration 3        (a short smoke run)
#   ./run_fraud.sh --only ours,kserve-inplace
set -euo pipefail
cd "$(dirname "$0")"
PROJECT_PY=${PROJECT_PY:-../../.venv/bin/python}
[ -x "$PROJECT_PY" ] || { echo "no project venv at $PROJECT_PY: run 'make install' at the repo root"; exit 1; }
[ -x .venv/kserve/bin/python ] && [ -x .venv/mlflow/bin/python ] && [ -f artifacts/model.ubj ] && command -v wrk >/dev/null || ./setup.sh
if [ ! -f artifacts/fraud/expected.json ] || [ "${PREPARE:-0}" = 1 ]; then
  "$PROJECT_PY" scripts/prepare_fraud.py --out artifacts/fraud $([ "${PREPARE:-0}" = 1 ] && echo --force)
fi
BENCH_ARTIFACTS=artifacts/fraud exec ./run.sh --only mlflow,kserve-inplace,kserve-const,ours,ours-nobatch,ours-shadow "$@"
