#!/usr/bin/env bash
# The image's whole install, shared by docker/Dockerfile and docker/swat_dist.def so the two cannot drift:
# Python and a compiler from Debian, then launch/setup.sh (the developers' and CI's installer): FFCV's
# system libraries, /opt/swat_dist/.venv with every Python package at the lock's exact versions
# (launch/constraints.txt), DeepSpeed's CPU communication op pre-built.
#   bash docker/install.sh      (as root, from /opt/swat_dist)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# build-essential + python3-dev: ffcv and DeepSpeed's ops compile against them (DeepSpeed's JIT ops too, at
# run time); git: DeepSpeed's setup.py asks it for a version.
apt-get install -y -qq --no-install-recommends ca-certificates python3 python3-venv python3-dev \
  build-essential git >/dev/null
# Empty build arguments arrive as empty variables; pip reads an empty PIP_FIND_LINKS as a location.
for v in PIP_CERT PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_INDEX_URL; do
  [ -n "${!v:-}" ] || unset "$v"
done
PIP_NO_CACHE_DIR=1 PYTHON=/usr/bin/python3 bash launch/setup.sh
rm -rf /var/lib/apt/lists/* /root/.cache .venv/setup.log
find . -name __pycache__ -prune -exec rm -rf {} +
