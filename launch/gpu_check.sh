#!/usr/bin/env bash
# The prepared GPU check (issue 11), one command on a lent H100/H200 machine, well within 8 minutes:
#   bash launch/gpu_check.sh --prepare   # HERE, once (network): wheels of what that machine lacks -> launch/gpu_wheels/
#   bash launch/gpu_check.sh --dry       # HERE: the same steps on the CPU, without what that machine lacks
#   bash launch/gpu_check.sh             # THERE (device tool, carry: ["launch/gpu_wheels"]); results under $OUT
# The GPU machine has Python 3.12, torch 2.11+cu130, timm, einops, numpy, safetensors, pyyaml, ninja, psutil,
# msgpack, py-cpuinfo, portalocker, tabulate, but no deepspeed, fvcore (iopath, yacs, termcolor), pydantic,
# hjson, webdataset, mlflow, submitit or ffcv, and no network. The check installs the carried wheels with
# --no-deps into a temporary --target folder (the machine's own torch stays), then runs the `gpu` tests
# (tests/gpu: ZeRO-1 bf16 through DeepSpeed on NCCL, EMA under bf16, collectives on NCCL, the segmentation
# model in bf16, host syncs per micro-batch, NVML metrics; the device augmentation ops and pipeline on CUDA
# under sync-debug "error"; FFCV's C extension does not travel, so its test says it is skipped),
# launch/gpu_device_pipeline.py (nvJPEG decode + the whole recipe, images/s at batch 256) and launch/gpu_trainer.py: the trainer itself for DeiT-S, Swin-T and Mixer-S, SWAT and
# baseline (images/s, MFU, data wait, peak memory), resume on the GPU, UperNet with BatchNorm through
# DeepSpeed; it prints the report it wrote to $OUT/trainer/trainer.md. Record it in docs/benchmarks.md with
# the device. (`swat-dist bench model` - the model alone in its own AdamW loop - is no longer run here, to
# stay within the 8 minutes; run it by hand if the device time allows.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/launch/gpu_wheels"

prepare() {
  local py="$ROOT/.venv/bin/python"
  [ -x "$py" ] || { echo "gpu_check --prepare: run bash launch/setup.sh first (it needs the venv's versions)" >&2; exit 2; }
  ver() { "$py" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
  "$py" -m wheel version >/dev/null 2>&1 || "$ROOT/.venv/bin/pip" install -q wheel  # for the retagging below
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  local pure=(hjson fvcore iopath yacs termcolor annotated-types typing-inspection pydantic webdataset braceexpand)
  local specs=() p
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
  # the segmentation check's data: made here (seg-digits needs scikit-learn, which that machine lacks)
  "$py" "$ROOT/launch/gpu_trainer.py" --make-seg-data "$WHEELS/seg-wds" >/dev/null
  rm -rf "$WHEELS/seg-wds-src"
  ls "$WHEELS"
  du -sh "$WHEELS"
}

# --dry (here, after --prepare): the same steps on the CPU, in a venv of this venv's packages less those that
# machine lacks (mlflow, submitit, ffcv, boto3) and those the wheels carry: what would fail there for a
# missing package fails here too. The gpu tests skip; gpu_trainer runs micro models.
gpu_like_python() {
  local dir="$1" sp entry name
  sp="$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$ROOT/.venv/bin/python" -m venv --without-pip "$dir/venv"
  mkdir -p "$dir/pkgs"
  for entry in "$sp"/*; do
    name="$(basename "$entry")"
    case "${name,,}" in
      mlflow*|submitit*|ffcv*|boto3*|botocore*|s3transfer*|deepspeed*|fvcore*|iopath*|yacs*|termcolor*|pydantic*|\
      annotated_types*|typing_inspection*|hjson*|webdataset*|braceexpand*|__editable__*|swat_dist*) ;;
      *) ln -s "$entry" "$dir/pkgs/$name" ;;
    esac
  done
  # addsitedir, not a bare path: the .pth files among the linked packages are processed as in site-packages
  echo "import site; site.addsitedir('$dir/pkgs')" > "$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/gpu_like.pth"
}

check() {
  local dry="${1:-}" py="${PYTHON:-python3}" out="${OUT:-/tmp/gpu_check}" site start wheels
  mkdir -p "$out"
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu_check: no wheels in $WHEELS (run --prepare here, carry them)" >&2; exit 2; }
  site="$(mktemp -d)"
  wheels=("$WHEELS"/*.whl)
  if [ -n "$dry" ]; then  # Python 3.11 here: this venv's pydantic_core, not the carried cp312 one
    gpu_like_python "$out/gpu_like"
    py="$out/gpu_like/venv/bin/python"
    mapfile -t wheels < <(ls "$WHEELS"/*.whl | grep -v pydantic_core)
    ln -s "$("$ROOT/.venv/bin/python" -c 'import pydantic_core, os; print(os.path.dirname(pydantic_core.__file__))')" "$site/pydantic_core"
  fi
  "$py" -m pip install --no-deps --no-index -q --target "$site" "${wheels[@]}" 2> "$out/pip.log" \
    || { cat "$out/pip.log" >&2; exit 1; }
  export PYTHONPATH="$ROOT:$site${PYTHONPATH:+:$PYTHONPATH}"
  export TORCH_EXTENSIONS_DIR="$out/torch_extensions"
  cd "$ROOT"
  start=$(date +%s)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt" || true
  "$py" -c "import torch, deepspeed; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, deepspeed.__file__,
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" 2>&1 | grep -v WARNING | tee -a "$out/device.txt"
  # every step under a timeout: a hung NCCL init or compile costs its limit, not the machine's whole lease
  timeout 240 "$py" -m pytest -q -s -p no:cacheprovider -m gpu tests/gpu tests/data/test_device_ops.py -rs 2>&1 \
    | tee "$out/gpu_tests.txt" || true
  # its own run: the module imports scikit-learn (the test photos), which that machine lacks - a collection
  # error there would stop the tests above; gpu_device_pipeline.py below compares CUDA with the CPU anyway
  timeout 60 "$py" -m pytest -q -s -p no:cacheprovider -m gpu tests/data/test_device_pipeline.py -rs 2>&1 \
    | tee -a "$out/gpu_tests.txt" || true
  echo "[gpu_check] gpu tests done at $(( $(date +%s) - start )) s"
  # issue 25: the device pipeline (nvJPEG decode + the whole recipe) at batch 256 on ImageNet-sized JPEGs
  timeout 90 "$py" launch/gpu_device_pipeline.py --out "$out/device_pipeline" ${dry:+--dry} 2>&1 | tail -n 8 || true
  # the trainer as users run it (default bf16 engine, full recipe): images/s, MFU, data wait, peak memory for
  # DeiT-S / Swin-T / Mixer-S, SWAT and baseline; resume on the device; UperNet + BatchNorm through DeepSpeed
  # (--dry: the carried DeepSpeed JIT-builds its CPU communication op in the first run, ~60-120 s here)
  local limit=330 each=100
  [ -z "$dry" ] || { limit=1500; each=400; }
  timeout "$limit" "$py" launch/gpu_trainer.py --out "$out/trainer" --timeout "$each" --seg-data "$WHEELS/seg-wds" \
    ${dry:+--dry} 2>&1 | grep -v "^\s" | tail -n 30 || true
  echo "[gpu_check] $out/trainer/trainer.md:"
  cat "$out/trainer/trainer.md" 2>/dev/null || true
  echo "[gpu_check] done in $(( $(date +%s) - start )) s"
}

case "${1:-}" in
  --prepare) prepare ;;
  "") check ;;
  --dry) check dry ;;
  *) echo "usage: bash launch/gpu_check.sh [--prepare | --dry]" >&2; exit 2 ;;
esac
