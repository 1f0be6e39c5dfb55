#!/usr/bin/env bash
# Stop the private Slurm that launch/slurm/up.sh started in DIR, by the pids it recorded, and remove DIR:
#   bash launch/slurm/down.sh DIR [--keep]      # --keep: leave DIR (logs) in place
# Slurm daemons first (they talk to slurmdbd and munge while stopping), then slurmdbd, MariaDB, munge.
set -uo pipefail
DIR="${1:?usage: down.sh DIR [--keep]}"
KEEP="${2:-}"
[ -f "$DIR/pids" ] || { echo "[slurm-down] no $DIR/pids: nothing to stop" >&2; exit 0; }

stop() {  # stop PID: TERM, up to 10 s, then KILL
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null
}
# Jobs still running would keep slurmstepd children alive after their slurmd exits.
SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
for name in slurmd-n1 slurmd-n2 slurmctld slurmdbd mariadbd munged; do
  while read -r pid what; do [ "$what" = "$name" ] && stop "$pid"; done <"$DIR/pids"
done
if [ "$KEEP" != "--keep" ]; then rm -rf "$DIR"; fi
echo "[slurm-down] stopped $(wc -l <"$DIR/pids" 2>/dev/null || echo all) daemons${KEEP:+ (kept $DIR)}" >&2
