#!/usr/bin/env bash
# The main job on a CPU, set-up included (README Quick start):
#   bash launch/demo.sh
# Until the trainer lands this prints the model zoo's complexity table: every SWAT model beside its
# baseline, parameters and fvcore GFLOPs counted live (the paper's complexity table, ~1 min on 2 cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup.sh"
exec "$ROOT/.venv/bin/swat-dist" models --flops "$@"
