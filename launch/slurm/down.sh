#!/usr/bin/env bash
# Stop the private Slurm that launch/slurm/up.sh started in DIR, by the pids it recorded, and remove DIR:
#   bash launch/slurm/down.sh DIR [--keep]      # --keep: leave DIR (logs) in place
# In three groups, each stopped in parallel (each daemon takes 1-3 s to stop; one by one it was ~12 s):
# the Slurm daemons (they still talk to slurmdbd and munge while stopping), then slurmdbd and MariaDB,
# then munged.
set -uo pipefail
DIR="${1:?usage: down.sh DIR [--keep]}"
KEEP="${2:-}"
[ -f "$DIR/pids" ] || { echo "[slurm-down] no $DIR/pids: nothing to stop" >&2; exit 0; }

stop_group() {  # stop_group NAME...: TERM each recorded pid of those names, wait up to 10 s, then KILL
  local pids=() pid what i
  while read -r pid what; do
    for name in "$@"; do [ "$what" = "$name" ] && kill -0 "$pid" 2>/dev/null && pids+=("$pid"); done
  done <"$DIR/pids"
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null
  for i in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null
}
# Jobs still running would leave their slurmstepd and tasks behind once slurmd is gone.
ids=$(SLURM_CONF="$DIR/slurm.conf" timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
[ -z "${ids// /}" ] || SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --full --quiet $ids 2>/dev/null || true
stop_group slurmd-n1 slurmd-n2 slurmctld
stop_group slurmdbd mariadbd
stop_group munged
n=$(wc -l <"$DIR/pids")
if [ "$KEEP" != "--keep" ]; then rm -rf "$DIR"; fi
echo "[slurm-down] stopped $n daemons${KEEP:+ (kept $DIR)}" >&2
