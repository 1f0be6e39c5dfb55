#!/usr/bin/env bash
# The main job on a CPU, set-up included (README Quick start):
#   bash launch/demo.sh [key=value ...]        e.g. model.name=deit_micro_patch4_32 for the baseline
#   bash launch/demo.sh seg [key=value ...]    the segmentation demo (seg-digits, UperNet)
# Writes the digits data set (shipped with scikit-learn) as WebDataset shards, then trains a micro SWAT
# DeiT on it with 2 processes through DeepSpeed (gloo), in a new run folder under runs/. With `seg`: the
# seg-digits set (digits pasted on scikit-learn's photos) and a micro SWAT Swin + UperNet.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup.sh"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.torch_extensions}"
if [ "${1:-}" = "seg" ]; then  # the segmentation demo: seg-digits, UperNet on a micro SWAT Swin
  shift
  NAME=demo_seg_digits
  if [ ! -f data/seg-digits-wds/index.json ]; then
    "$BIN/swat-dist" data seg-digits data/seg-digits
    "$BIN/swat-dist" data convert data/seg-digits data/seg-digits-wds --task segment --format wds --num-classes 11
  fi
else
  NAME=demo_digits
  if [ ! -f data/digits-wds/index.json ]; then
    "$BIN/swat-dist" data digits data/digits
    "$BIN/swat-dist" data convert data/digits data/digits-wds --format wds
  fi
fi
RUN="runs/$NAME-$(date +%Y%m%d-%H%M%S)"
"$BIN/torchrun" --standalone --nproc_per_node 2 -m swat_dist train -c "configs/$NAME.yaml" "output_dir=$RUN" "$@"
echo "[demo] run folder: $ROOT/$RUN (config.yaml, metrics.jsonl, summary.json, checkpoints)"
# MLflow: the run is in the output root's sqlite store unless MLFLOW_TRACKING_URI points elsewhere.
if [ -z "${MLFLOW_TRACKING_URI:-}" ]; then
  echo "[demo] MLflow run $(sed -n 's/.*"run_id": "\([0-9a-f]*\)".*/\1/p' "$RUN/tracking/run.json" 2>/dev/null)" \
    "(experiment $NAME); look at it: $BIN/mlflow ui --backend-store-uri sqlite:///$ROOT/runs/mlflow.db --port 5000"
  echo "[demo] compare runs: $BIN/swat-dist compare --uri sqlite:///$ROOT/runs/mlflow.db --experiment $NAME --out $ROOT/runs/compare"
fi
