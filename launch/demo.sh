#!/usr/bin/env bash
# The main job on a CPU, set-up included (README Quick start):
#   bash launch/demo.sh [key=value ...]        e.g. model.name=deit_micro_patch4_32 for the baseline
# Writes the digits data set (shipped with scikit-learn) as WebDataset shards, then trains a micro SWAT
# DeiT on it with 2 processes through DeepSpeed (gloo), in a new run folder under runs/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup.sh"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.torch_extensions}"
if [ ! -f data/digits-wds/index.json ]; then
  "$BIN/swat-dist" data digits data/digits
  "$BIN/swat-dist" data convert data/digits data/digits-wds --format wds
fi
RUN="runs/demo_digits-$(date +%Y%m%d-%H%M%S)"
"$BIN/torchrun" --standalone --nproc_per_node 2 -m swat_dist train -c configs/demo_digits.yaml "output_dir=$RUN" "$@"
echo "[demo] run folder: $ROOT/$RUN (config.yaml, metrics.jsonl, summary.json, checkpoints)"
