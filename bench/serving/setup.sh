#!/usr/bin/env bash
# Creates one venv per peer under .venv/ (gitignored), installs wrk, trains the
# reference model. Idempotent: re-running skips what exists.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON_VERSION:-3.11}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
# uv: from PATH, else the project's pinned copy (make installs it into .tools/ when it is not on PATH)
UV=${UV:-$(command -v uv || echo ../../.tools/bin/uv)}
[ -x "$UV" ] || { echo "uv is required: put it on PATH, set UV=..., or run 'make install' at the repo root"; exit 1; }

for n in mlflow kserve mlserver; do
  if [ ! -x ".venv/$n/bin/python" ]; then
    "$UV" venv -q --python "$PY" ".venv/$n"
  fi
  # exact pins, compiled from req/$n.in with: uv pip compile --python-version 3.11 req/$n.in -o req/$n.lock.txt
  "$UV" pip sync -q --python ".venv/$n/bin/python" "req/$n.lock.txt"
done

# Reference model: trained once in the mlflow venv, loaded by every server.
if [ ! -f artifacts/model.ubj ] || [ "${RETRAIN:-0}" = 1 ]; then
  .venv/mlflow/bin/python scripts/train.py --out artifacts
fi
echo "setup done"
