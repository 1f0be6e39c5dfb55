#!/usr/bin/env bash
# The main job on a CPU, set-up included (README Quick start):
#   bash launch/demo.sh [key=value ...]        e.g. model.name=deit_micro_patch4_32 for the baseline
#   bash launch/demo.sh seg [key=value ...]    the segmentation demo: pretrain, then segment (UperNet)
# Writes the digits data set (shipped with scikit-learn) as WebDataset shards, then trains a micro SWAT
# DeiT on it with 2 processes through DeepSpeed (gloo), in a new run folder under runs/. With `seg`, the
# paper's two stages (ImageNet -> ADE20K) at CPU scale: a micro SWAT Swin learns photo-digits
# (classification), is exported, and initialises the backbone of UperNet on seg-digits (the same bright
# digits on dimmed photos, at the same scale, to segment).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/setup.sh"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.torch_extensions}"
STAMP="$(date +%Y%m%d-%H%M%S)"
TRAIN=("$BIN/torchrun" --standalone --nproc_per_node 2 -m swat_dist train)
if [ "${1:-}" = "seg" ]; then  # the segmentation demo, the paper's way: pretrain on classification, then segment
  shift
  NAME=demo_seg_digits
  # The data sets' folders carry their recipe's name (seg-digits of rounds 1-2 were larger, fainter digits).
  if [ ! -f data/photo-digits-wds/index.json ]; then
    "$BIN/swat-dist" data photo-digits data/photo-digits
    "$BIN/swat-dist" data convert data/photo-digits data/photo-digits-wds --format wds
  fi
  if [ ! -f data/seg-digits-bright-wds/index.json ]; then
    "$BIN/swat-dist" data seg-digits data/seg-digits-bright
    "$BIN/swat-dist" data convert data/seg-digits-bright data/seg-digits-bright-wds --task segment --format wds --num-classes 11
  fi
  # Stage 1 (ImageNet's part): the backbone learns to read photo-digits; its weights are exported as a user
  # exports an ImageNet run. Overrides given to the demo go to both stages (model.name=... for the baseline).
  PRE="runs/demo_seg_pretrain-$STAMP"
  "${TRAIN[@]}" -c configs/demo_seg_pretrain.yaml "output_dir=$PRE" "$@"
  "$BIN/swat-dist" export "$PRE" "$PRE/backbone.safetensors"
  echo "[demo] stage 1 (pretraining) run folder: $ROOT/$PRE"
  set -- "model.backbone_weights=$PRE/backbone.safetensors" "$@"
else
  NAME=demo_digits
  if [ ! -f data/digits-wds/index.json ]; then
    "$BIN/swat-dist" data digits data/digits
    "$BIN/swat-dist" data convert data/digits data/digits-wds --format wds
  fi
fi
RUN="runs/$NAME-$STAMP"
"${TRAIN[@]}" -c "configs/$NAME.yaml" "output_dir=$RUN" "$@"
echo "[demo] run folder: $ROOT/$RUN (config.yaml, metrics.jsonl, summary.json, checkpoints)"
# MLflow: the run is in the output root's sqlite store unless MLFLOW_TRACKING_URI points elsewhere.
if [ -z "${MLFLOW_TRACKING_URI:-}" ]; then
  echo "[demo] MLflow run $(sed -n 's/.*"run_id": "\([0-9a-f]*\)".*/\1/p' "$RUN/tracking/run.json" 2>/dev/null)" \
    "(experiment $NAME); look at it: $BIN/mlflow ui --backend-store-uri sqlite:///$ROOT/runs/mlflow.db --port 5000"
  echo "[demo] compare runs: $BIN/swat-dist compare --uri sqlite:///$ROOT/runs/mlflow.db --experiment $NAME --out $ROOT/runs/compare"
fi
