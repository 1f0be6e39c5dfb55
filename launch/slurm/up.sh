#!/usr/bin/env bash
# A private Slurm on this one machine, for launcher tests and trying `swat-dist submit` without a cluster:
#
#   eval "$(bash launch/slurm/up.sh [DIR])"    # -> export SLURM_CONF=DIR/slurm.conf  SWAT_SLURM_DIR=DIR
#   sbatch / srun / squeue / sacct / swat-dist submit --cluster local-test ...
#   bash launch/slurm/down.sh DIR               # stops exactly the daemons this script started
#
# munged, a private MariaDB, slurmdbd, slurmctld and two virtual nodes n1/n2 (two slurmd on 127.0.0.1 with
# their own ports), all under DIR (default: a fresh temp folder) on free non-default ports, so it never
# touches a system Slurm. Accounting (slurmdbd + MariaDB, ~3 s more) is what makes `sacct` work, and without
# sacct submitit waits forever on a job that died without writing its result (PLATFORM.md).
# Needs root and Debian's slurm-wlm munge slurmdbd mariadb-server (launch/test.sh installs them).
# stdout carries only the export lines; progress and errors go to stderr.
set -euo pipefail

DIR="${1:-$(mktemp -d /tmp/swat-slurm.XXXXXX)}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "[slurm-up] $*" >&2; }
fail() {
  log "error: $*; logs in $DIR/log"
  bash "$HERE/down.sh" "$DIR" --keep >&2 || true
  exit 1
}
for tool in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { log "error: $tool not found (apt-get install slurm-wlm munge slurmdbd mariadb-server)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { log "error: needs root (daemons run as root or munge)"; exit 1; }

T0=$SECONDS
# munged reaches its socket and key through DIR as the munge user, so DIR must be traversable.
chmod 755 "$DIR"
mkdir -p "$DIR"/{log,state,spool,munge,db}
: >"$DIR/pids"
read -r P_CTLD P_N1 P_N2 P_DBD P_SQL < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
HOST="$(hostname -s)"
SOCK="$DIR/munge/munge.sock"

start() {  # start NAME CMD...: run in the background, detached from our session; remember its pid
  local name="$1"; shift
  setsid "$@" >"$DIR/log/$name.out" 2>&1 < /dev/null &
  echo "$! $name" >>"$DIR/pids"
}
wait_for() {  # wait_for WHAT SECONDS CMD...
  local what="$1" limit="$2"; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "$what not ready after ${limit}s"
    sleep 0.2
  done
}

# -- munge: a fresh key, its own socket -------------------------------------------------------------
head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
chown -R munge:munge "$DIR/munge"
chmod 700 "$DIR/munge"; chmod 400 "$DIR/munge/munge.key"; chmod 755 "$DIR/munge"
start munged setpriv --reuid=munge --regid=munge --init-groups munged -F --force \
  --socket="$SOCK" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
  --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
wait_for munged 10 test -S "$SOCK"

# -- MariaDB for slurmdbd: private datadir, socket and port ------------------------------------------
mariadb-install-db --no-defaults --user=root --datadir="$DIR/db/data" --skip-test-db \
  --auth-root-authentication-method=normal >"$DIR/log/mariadb-install.out" 2>&1 || fail "mariadb-install-db"
start mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/db/data" --socket="$DIR/db/mysql.sock" \
  --port="$P_SQL" --bind-address=127.0.0.1 --pid-file="$DIR/db/mariadbd.pid" --skip-log-bin \
  --innodb-buffer-pool-size=32M --log-error="$DIR/log/mariadbd.log"
wait_for mariadbd 30 mariadb --no-defaults -S "$DIR/db/mysql.sock" -uroot -e "select 1"
mariadb --no-defaults -S "$DIR/db/mysql.sock" -uroot -e "
  CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; CREATE USER 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct.* TO 'slurm'@'localhost';" \
  || fail "creating the slurm database user"

# -- slurmdbd, slurmctld, two slurmd ----------------------------------------------------------------
cat >"$DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$P_DBD
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$P_SQL
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
CONF
chmod 600 "$DIR/slurmdbd.conf"  # slurmdbd refuses a config others can read (it holds the DB password)

# sched_interval=2: a requeued job whose StartTime was moved up starts within ~2 s (default: the next
# scheduling pass, up to a minute). KillWait=5: a requeued or cancelled job's tasks get SIGKILL 5 s after
# SIGTERM (default 30 s; submitit ignores SIGTERM). ReturnToService=2: a node that was down comes back
# when its slurmd registers.
cat >"$DIR/slurm.conf" <<CONF
ClusterName=swattest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$P_CTLD
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$P_DBD
AccountingStoragePass=$SOCK
NodeName=n1 NodeAddr=127.0.0.1 Port=$P_N1 CPUs=2 RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 Port=$P_N2 CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$DIR/slurm.conf"

start slurmdbd slurmdbd -D  # reads slurmdbd.conf next to $SLURM_CONF
wait_for slurmdbd 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$P_DBD"
start slurmctld slurmctld -D -i -f "$SLURM_CONF"
wait_for slurmctld 30 scontrol ping
start slurmd-n1 slurmd -D -N n1 -f "$SLURM_CONF"
start slurmd-n2 slurmd -D -N n2 -f "$SLURM_CONF"
wait_for "nodes n1 n2" 40 bash -c '[ "$(sinfo -h -N -o "%N %t" | grep -c idle)" = 2 ]'
wait_for "accounting (sacct)" 20 sacct -n -X
log "up in $((SECONDS - T0)) s: $DIR (pids in $DIR/pids)"
echo "export SLURM_CONF=$SLURM_CONF"
echo "export SWAT_SLURM_DIR=$DIR"
