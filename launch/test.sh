#!/usr/bin/env bash
# The test suite, set-up included (README Quick start; .ci/run calls exactly this):
#   bash launch/test.sh [extra pytest args]
# Installs what is missing (launch/setup.sh), then lint, format check, type check and pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The launcher tests bring up a private Slurm (launch/slurm/up.sh): its Debian packages (~25 s) come in
# through setup.sh's extra-packages hook.
SWAT_EXTRA_SYSTEM_PACKAGES="${SWAT_EXTRA_SYSTEM_PACKAGES:-} slurm-wlm munge slurmdbd mariadb-server" \
  bash "$ROOT/launch/setup.sh"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
echo "[test] ruff check";        "$BIN/ruff" check .
echo "[test] ruff format";       "$BIN/ruff" format --check .
echo "[test] mypy";              "$BIN/mypy"
echo "[test] pytest";            "$BIN/python" -m pytest "$@"
