#!/usr/bin/env bash
# Build the image with podman from a local Debian base and test it inside, without network:
#   bash docker/test_image.sh                  # ~15 min on 2 cores, ~10 GB of disk while it runs
#   SWAT_IMAGE_KEEP=1 bash docker/test_image.sh  # keep the image (localhost/swat_dist:test) and its base
# Steps: install podman/debootstrap/runc when missing (apt, root), a debootstrap'd bookworm base (no image
# registry needed), `podman build` of docker/Dockerfile, then in the container with --network=none:
# `swat-dist --help`, the heavy imports, every installed package at its lock version, DeepSpeed's
# pre-built CPU op, the demo to its accuracy target and a subset of the tests. Prints each step's time.
# Not part of the default CI run (.ci/run runs it when SWAT_IMAGE_TEST=1): see README "Containers".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${SWAT_IMAGE_TAG:-localhost/swat_dist:test}"
BASE="localhost/debian:bookworm-minbase"
MIN_TOP1="${SWAT_IMAGE_MIN_TOP1:-95}"  # the demo reaches 98.6% val top-1 (README); fail well below that
WORK="$(mktemp -d /tmp/swat-image.XXXXXX)"
T0=$SECONDS
T_STEP=$SECONDS
log() { echo "[image $((SECONDS - T0))s] $*"; }
step() { log "$1 done in $((SECONDS - T_STEP)) s"; T_STEP=$SECONDS; }
made_base=""

cleanup() {
  local rc=$?
  if [ -n "${SWAT_IMAGE_KEEP:-}" ]; then
    log "kept $TAG and $BASE (remove: podman rmi $TAG $BASE)"
  else
    podman rmi -f "$TAG" >/dev/null 2>&1 || true
    [ -z "$made_base" ] || podman rmi -f "$BASE" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  log "total $((SECONDS - T0)) s, exit $rc"
}
trap cleanup EXIT

# 1. Tools. podman needs runc (crun: "cgroups in hybrid mode not supported") and explicit ulimits (the
# default rlimits are refused: "setrlimit RLIMIT_NOFILE"), set in a private containers.conf (PLATFORM.md).
missing=()
for tool in podman:podman debootstrap:debootstrap runc:runc; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "docker/test_image.sh: error: needs root to install ${missing[*]}" >&2; exit 1; }
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export CONTAINERS_CONF="$WORK/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
step "tools"

# 2. The base: Debian 12 minbase (what debian:bookworm-slim is) from deb.debian.org, imported as an image.
if ! podman image exists "$BASE"; then
  log "debootstrap bookworm -> $BASE"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  tar -C "$WORK/rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
  made_base=1
fi
step "base image"

# 3. The build. pip inside it sees this machine's pip sources (local indexes, CA bundle) when there are
# any: the lock fixes the versions, so the sources change only the download time, not the packages.
build=(--layers=false --format docker --build-arg "BASE=$BASE" --build-arg "SWAT_DIST_IMAGE=$TAG")
cert="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
if [ -f "$cert" ]; then  # one file at another path: mounting /etc/ssl/certs breaks the image's ca-certificates
  build+=(-v "$cert:/etc/host-ca.crt:ro" --build-arg PIP_CERT=/etc/host-ca.crt)
fi
for key in extra-index-url find-links; do
  value="$(python3 -m pip config get "global.$key" 2>/dev/null || true)"
  [ -n "$value" ] || continue
  for location in $value; do
    dir="${location#file://}"
    # a PEP 503 index (DIR/simple) links its files outside simple/ (../../files): mount the whole DIR
    [ "$(basename "$dir")" != simple ] || dir="$(dirname "$dir")"
    if [ -d "$dir" ]; then build+=(-v "$dir:$dir:ro"); fi
  done
  arg="PIP_$(echo "$key" | tr 'a-z-' 'A-Z_')"
  build+=(--build-arg "$arg=$value")
done
log "podman build $TAG (~11 min on 2 cores)"
podman build "${build[@]}" -t "$TAG" -f "$ROOT/docker/Dockerfile" "$ROOT" >"$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log" >&2; exit 1; }
size=$(podman image inspect --format '{{.Size}}' "$TAG")
log "image $TAG: $((size / 1000000)) MB"
step "build"

# 4. Inside, without network, as the image's non-root user.
in_image() { podman run --rm --network=none --shm-size=2g "$@"; }  # 2 GB: gloo/DeepSpeed shared memory
in_image "$TAG" --help >/dev/null
in_image --entrypoint python "$TAG" -c "import ffcv, deepspeed, mlflow, submitit, webdataset"
in_image --entrypoint python "$TAG" /opt/swat_dist/launch/lock.py --installed
in_image --entrypoint python "$TAG" -c "
import deepspeed.git_version_info as v, os
assert v.installed_ops['deepspeed_shm_comm'], 'DeepSpeed shm_comm op not pre-built'
assert os.environ['SWAT_DIST_IMAGE'] and os.getuid() != 0, 'SWAT_DIST_IMAGE unset or running as root'
print('[image] shm_comm pre-built, SWAT_DIST_IMAGE', os.environ['SWAT_DIST_IMAGE'], 'uid', os.getuid())"
step "checks"

# The demo (launch/demo.sh with the baked venv) in the container's home, its accuracy read from summary.json.
in_image --entrypoint bash "$TAG" -c "
set -euo pipefail
swat-dist data digits data/digits >/dev/null && swat-dist data convert data/digits data/digits-wds --format wds >/dev/null
torchrun --standalone --nproc_per_node 2 -m swat_dist train -c /opt/swat_dist/configs/demo_digits.yaml \
  output_dir=runs/demo >train.log 2>&1 || { tail -30 train.log; exit 1; }
python - $MIN_TOP1 <<'EOF'
import json, sys
final = json.load(open('runs/demo/summary.json'))['final']
top1 = final['val/top1']
print(f'[image] demo: val top-1 {top1:.2f}% over {final[\"val/samples\"]} images (target >= {sys.argv[1]}%)')
sys.exit(0 if top1 >= float(sys.argv[1]) else 1)
EOF"
step "demo"

# A subset of the tests (~40 s here): the lock, the import rules, the config, the CLI, container profiles.
in_image --entrypoint python -w /opt/swat_dist "$TAG" -m pytest -q -p no:cacheprovider tests/test_lock.py \
  tests/test_imports.py tests/test_config.py tests/test_cli.py tests/cluster/test_container.py
step "tests"
log "image test passed"
