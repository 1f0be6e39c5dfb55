#!/usr/bin/env bash
# The prepared GPU check (issue 11), one command on a lent H100/H200 machine, well within 8 minutes:
#   bash launch/gpu_check.sh --prepare   # HERE, once (network): wheels of what that machine lacks -> launch/gpu_wheels/
#   bash launch/gpu_check.sh             # THERE (device tool, carry: ["launch/gpu_wheels"]); results under $OUT
# The GPU machine has Python 3.12, torch 2.11+cu130, timm, einops, numpy, safetensors, pyyaml, ninja, psutil,
# msgpack, py-cpuinfo, portalocker, tabulate, but no deepspeed, fvcore (iopath, yacs, termcolor), pydantic,
# hjson, webdataset, mlflow, submitit or ffcv, and no network. The check installs the carried wheels with
# --no-deps into a temporary --target folder (the machine's own torch stays), then runs the `gpu` tests
# (tests/gpu: ZeRO-1 bf16 through DeepSpeed on NCCL, EMA under bf16, collectives on NCCL, the segmentation
# model in bf16; FFCV's C extension does not travel, so its test says it is skipped) and
# `swat-dist bench model` for SWAT vs baseline at bf16 batch 256 for DeiT-S, Mixer-S and Swin-T (step time,
# images/s, MFU), and prints the table it wrote to $OUT/bench.md. Record it in docs/benchmarks.md with the device.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/launch/gpu_wheels"

prepare() {
  local py="$ROOT/.venv/bin/python"
  [ -x "$py" ] || { echo "gpu_check --prepare: run bash launch/setup.sh first (it needs the venv's versions)" >&2; exit 2; }
  ver() { "$py" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
  "$py" -m wheel version >/dev/null 2>&1 || "$ROOT/.venv/bin/pip" install -q wheel  # for the retagging below
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  local pure=(hjson fvcore iopath yacs termcolor annotated-types typing-inspection pydantic) specs=() p
  for p in "${pure[@]}"; do specs+=("$p==$(ver "$p")"); done
  "$ROOT/.venv/bin/pip" wheel --no-deps -q -w "$WHEELS" "${specs[@]}"
  # DeepSpeed without prebuilt ops: it JIT-builds what it needs with the nvcc there (we need none:
  # the trainer uses a client torch AdamW). --no-cache-dir: pip's cache holds setup.sh's build, with the CPU
  # shm op compiled for this Python. Without ops the wheel is pure Python but tagged for this interpreter,
  # which pip on that machine's Python 3.12 refuses: retag it py3-none-any (and check nothing compiled is in it).
  DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=0 "$ROOT/.venv/bin/pip" wheel --no-deps --no-build-isolation --no-cache-dir -q \
    -w "$WHEELS" "deepspeed==$(ver deepspeed)"
  local ds
  ds="$(ls "$WHEELS"/deepspeed-*.whl)"
  if unzip -l "$ds" | grep -q '\.so$'; then echo "gpu_check --prepare: $ds holds compiled ops" >&2; exit 1; fi
  "$py" -m wheel tags --remove --python-tag py3 --abi-tag none --platform-tag any "$ds" >/dev/null
  # pydantic's core is compiled: the wheel for that machine's Python, not ours
  "$ROOT/.venv/bin/pip" download --no-deps -q --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 -d "$WHEELS" "pydantic_core==$(ver pydantic_core)"
  ls "$WHEELS"
  du -sh "$WHEELS"
}

check() {
  local py="${PYTHON:-python3}" out="${OUT:-/tmp/gpu_check}" site start
  mkdir -p "$out"
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu_check: no wheels in $WHEELS (run --prepare here, carry them)" >&2; exit 2; }
  site="$(mktemp -d)"
  "$py" -m pip install --no-deps --no-index -q --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$ROOT:$site${PYTHONPATH:+:$PYTHONPATH}"
  export TORCH_EXTENSIONS_DIR="$out/torch_extensions"
  cd "$ROOT"
  start=$(date +%s)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt" || true
  "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/device.txt"
  "$py" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs 2>&1 | tee "$out/gpu_tests.txt" || true
  echo "[gpu_check] gpu tests done at $(( $(date +%s) - start )) s"
  for model in swat_deit_small_patch16_224 swat_mixer_s16_224 swat_swin_tiny_patch4_window7_224; do
    "$py" -m swat_dist bench model "$model" --batch 256 --device cuda --steps 10 --rounds 3 --out "$out/bench.md" \
      2>&1 | tail -n 4 || echo "[gpu_check] bench $model failed"
  done
  echo "[gpu_check] $out/bench.md:"
  cat "$out/bench.md" 2>/dev/null || true
  echo "[gpu_check] done in $(( $(date +%s) - start )) s"
}

case "${1:-}" in
  --prepare) prepare ;;
  "") check ;;
  *) echo "usage: bash launch/gpu_check.sh [--prepare]" >&2; exit 2 ;;
esac
