#!/usr/bin/env bash
# Idempotent set-up: system packages, a virtual environment at .venv, swat_dist with all its dependencies.
#
#   bash launch/setup.sh            # what launch/demo.sh and launch/test.sh run first
#   SWAT_SETUP_FORCE=1 bash ...     # reinstall even if nothing changed
#
# A second run is fast: a stamp in .venv records a hash of what was installed and from which files.
# Without root (and no passwordless sudo) it names the missing system packages and carries on; the
# Python parts that need them (ffcv) are then skipped, and say so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# The lock (launch/lock.py writes it): every pip install below is constrained to its exact versions, so a
# fresh venv and the image (docker/) get the same packages. SWAT_LOCK= (empty) installs from the ranges.
LOCK="${SWAT_LOCK-$ROOT/launch/constraints.txt}"
PY="${PYTHON:-python3}"
# FFCV builds against OpenCV and libturbojpeg, found through pkg-config (PLATFORM.md).
SYSTEM_PACKAGES=(pkg-config libopencv-dev libturbojpeg0-dev)
# Extra system packages a caller needs (launch/test.sh adds Slurm's), space-separated.
read -r -a EXTRA_PACKAGES <<<"${SWAT_EXTRA_SYSTEM_PACKAGES:-}"

log() { echo "[setup] $*"; }

missing_of() {
  local pkg
  for pkg in "$@"; do
    [ -n "$pkg" ] || continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}

missing_system_packages() { missing_of "${SYSTEM_PACKAGES[@]}" "${EXTRA_PACKAGES[@]}"; }
missing_for_ffcv() { missing_of "${SYSTEM_PACKAGES[@]}"; }

install_system_packages() {
  local missing
  missing="$(missing_system_packages | tr '\n' ' ')"
  [ -n "${missing// /}" ] || return 0
  if ! command -v apt-get >/dev/null; then
    log "WARNING: no apt-get here; install these yourself: $missing"
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      log "WARNING: not root and no passwordless sudo; missing system packages: $missing"
      log "         run: sudo apt-get install -y $missing   (until then ffcv is skipped)"
      return 0
    fi
  fi
  log "installing system packages: $missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

make_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" - <<'EOF'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"[setup] error: Python >= 3.10 needed, the venv has {sys.version.split()[0]}")
EOF
}

stamp_value() {
  # Re-install when the dependency list, the lock, this script, or whether ffcv can be built changes.
  { cat "$ROOT/pyproject.toml" "$ROOT/launch/setup.sh" ${LOCK:+"$LOCK"}; missing_for_ffcv; } | sha256sum | cut -c1-16
}

# pip's chatter goes to a log; its tail is shown if a step fails.
PIP_LOG="$VENV/setup.log"
pip_install() {
  local lock=()
  [ -z "$LOCK" ] || lock=(-c "$LOCK")
  if ! "$VENV/bin/python" -m pip --disable-pip-version-check -q install "${lock[@]}" "$@" >>"$PIP_LOG" 2>&1; then
    grep -v "is ignored: it is neither" "$PIP_LOG" | tail -30 >&2
    log "error: pip install $* failed (full log: $PIP_LOG)"
    exit 1
  fi
}

install_python_packages() {
  : >"$PIP_LOG"
  if [ -n "$LOCK" ] && ! "$VENV/bin/python" "$ROOT/launch/lock.py" --check >/dev/null; then
    log "WARNING: $LOCK is older than pyproject.toml's dependencies: run python launch/lock.py"
  fi
  # Build tools and torch first: deepspeed's and ffcv's builds import torch and numpy, and build
  # isolation would otherwise fetch a second multi-GB torch into a throwaway environment.
  local base
  base="$("$VENV/bin/python" "$ROOT/launch/pyproject_deps.py" "$ROOT/pyproject.toml" torch torchvision numpy pillow)"
  log "installing build tools and $(echo "$base" | tr '\n' ' ')"
  pip_install --upgrade pip setuptools wheel
  # shellcheck disable=SC2086
  pip_install $base
  # Every extra pyproject.toml lists (what the lock covers), ffcv only when its system packages are here.
  local extras
  extras="$("$VENV/bin/python" "$ROOT/launch/pyproject_deps.py" "$ROOT/pyproject.toml" --extras)"
  if [ -n "$(missing_for_ffcv)" ]; then
    extras="$(echo "$extras" | tr ',' '\n' | { grep -vx ffcv || true; } | paste -sd, -)"
    log "WARNING: skipping ffcv (needs system packages: $(missing_for_ffcv | tr '\n' ' '))"
  fi
  log "installing swat_dist[$extras] and its dependencies"
  # DS_BUILD_SHM_COMM pre-builds DeepSpeed's CPU communication op now, instead of a silent ~60 s
  # JIT compile in the first training run on every new machine (PLATFORM.md).
  DS_BUILD_SHM_COMM=1 pip_install --no-build-isolation -e "$ROOT[$extras]"
}

main() {
  if [ -n "$LOCK" ] && [ ! -f "$LOCK" ]; then
    log "error: no lock file $LOCK (write it with: python launch/lock.py; or SWAT_LOCK= for the ranges)"
    exit 1
  fi
  install_system_packages
  make_venv
  local stamp="$VENV/.swat-setup-stamp" want
  want="$(stamp_value)"
  if [ -z "${SWAT_SETUP_FORCE:-}" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "up to date ($VENV)"
    return 0
  fi
  local t0=$SECONDS
  install_python_packages
  echo "$want" >"$stamp"
  log "done in $((SECONDS - t0)) s ($VENV)"
}

main "$@"
