#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, from Debian 12's own packages, for
# the cluster test (tests/test_cluster.py, `make test-cluster`) and for trying the SLURM profile
# (workflow/profiles/slurm/) by hand.
#
#   scripts/slurm-cluster.sh install     install missing packages of envs/apt-cluster.txt only
#   scripts/slurm-cluster.sh up DIR      install missing packages, start munged, slurmctld, slurmd
#   scripts/slurm-cluster.sh down DIR    cancel jobs, stop every process started for DIR, by PID
#   scripts/slurm-cluster.sh status DIR  what is running for DIR
#
# Needs root. Everything lives under DIR (config, keys, sockets, state, logs, PID files), with
# one documented exception: the symlink /etc/slurm/slurm.conf -> DIR/slurm/slurm.conf. Inside
# a job, the slurm-jobstep plugin strips SLURM_CONF before its inner `srun`, which then only
# finds Debian's compiled-in default path (snakemake-executor-plugin-slurm#164). `up` refuses to
# replace an existing /etc/slurm/slurm.conf; `down` removes the symlink only if it is ours.
#
# How processes are found again: every daemon is started with REALLYMUTED_SLURM_CLUSTER=DIR in
# its environment, and slurmd passes it on to its slurmstepd; the test adds the same variable to
# what it submits. `down` stops the recorded PIDs, then any process still carrying the marker
# (never itself or its ancestors), so a failed run leaves nothing behind. No systemd, no
# cgroups (proctrack/linuxproc, task/none), no accounting daemon: `sacct` is unavailable, so
# job history comes from `squeue --states=all` (jobs stay listed for MinJobAge = 300 s).
# Ports are chosen free at `up` and bound to 127.0.0.1 only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
MARKER=REALLYMUTED_SLURM_CLUSTER
SYSTEM_CONF=/etc/slurm/slurm.conf

say() { echo "[slurm-cluster $(date +%T)] $*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}

usage() { die "usage: $0 install | $0 up|down|status DIR"; }

# --- process bookkeeping ----------------------------------------------------------------

# PIDs of processes whose environment carries our marker for $BASE, except this script and
# its ancestors (the caller may have the marker in its own environment).
marked_pids() {
  local self=$$ p ancestors=" "
  p=$self
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    ancestors+="$p "
    p=$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null || true)
  done
  for env in /proc/[0-9]*/environ; do
    p=${env#/proc/}
    p=${p%/environ}
    case "$ancestors" in *" $p "*) continue ;; esac
    if tr '\0' '\n' 2>/dev/null <"$env" | grep -qxF "$MARKER=$BASE"; then echo "$p"; fi
  done
}

has_marker() { # PID: is it alive and ours?
  tr '\0' '\n' 2>/dev/null <"/proc/$1/environ" | grep -qxF "$MARKER=$BASE"
}

stop_all() { # PID=NAME...: TERM each that is ours, wait up to 10 s for all, then KILL the rest
  local entry pending=() still
  for entry in "$@"; do
    [ -n "${entry%%=*}" ] && has_marker "${entry%%=*}" || continue
    kill -TERM "${entry%%=*}" 2>/dev/null && pending+=("$entry")
  done
  for _ in $(seq 40); do
    still=()
    for entry in "${pending[@]}"; do
      if kill -0 "${entry%%=*}" 2>/dev/null; then
        still+=("$entry")
      else
        say "stopped ${entry#*=} (${entry%%=*})"
      fi
    done
    pending=("${still[@]}")
    [ ${#pending[@]} -gt 0 ] || return 0
    sleep 0.25
  done
  for entry in "${pending[@]}"; do
    say "${entry#*=} (${entry%%=*}) ignored TERM; sending KILL"
    kill -KILL "${entry%%=*}" 2>/dev/null || true
  done
}

start_daemon() { # NAME COMMAND...: start in its own session with the marker; record its PID
  local name=$1
  shift
  setsid env "$MARKER=$BASE" "$@" </dev/null >"$BASE/log/$name.out" 2>&1 &
  echo $! >"$BASE/pids/$name"
}

free_port() { # a TCP port nothing listens on, in 20000-29999
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 10000))
    ss -Htln "sport = :$port" | grep -q . || {
      echo "$port"
      return 0
    }
  done
  die "no free TCP port found"
}

# --- up ---------------------------------------------------------------------------------

up() {
  [ "$(id -u)" -eq 0 ] || die "a local SLURM cluster needs root (it starts munged, slurmctld, slurmd)"
  if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    die "$SYSTEM_CONF already exists ($(readlink -f "$SYSTEM_CONF")): another cluster is" \
      "configured on this machine; stop it first (scripts/slurm-cluster.sh down ITS_DIR)"
  fi
  local dir
  # munged (run as user munge) insists that everyone may search every directory above its
  # socket: pytest's private /tmp/pytest-of-root (0700) will not do, mktemp -d under /tmp will.
  dir=$(dirname "$BASE")
  while [ "$dir" != / ]; do
    [ "$(($(stat -c %#a "$dir") & 1))" -eq 1 ] ||
      die "munged needs o+x on every directory above its socket, and $dir is not; use a DIR" \
        "under /tmp, e.g. \$(mktemp -d /tmp/slurm.XXXXXX)"
    dir=$(dirname "$dir")
  done
  install

  mkdir -p "$BASE"/{munge,slurm/state,slurm/spool,log,pids}
  chmod 0755 "$BASE" "$BASE/slurm"
  # Failing half-way (an error or `die`) must not leave daemons behind.
  trap 'rc=$?; [ $rc -eq 0 ] || { say "up failed; tearing down"; down || true; }; exit $rc' EXIT

  # munged as user munge, private key and socket (never the system's /run/munge).
  local sock="$BASE/munge/munge.socket.2"
  [ ${#sock} -lt 100 ] || die "DIR is too long for a Unix socket path: $sock"
  chown munge:munge "$BASE/munge"
  chmod 0700 "$BASE/munge"
  setpriv --reuid=munge --regid=munge --init-groups \
    mungekey --create --keyfile="$BASE/munge/munge.key" --force
  chmod 0755 "$BASE/munge" # clients must reach the socket; munged checks the key's own mode
  start_daemon munged setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --socket="$sock" --key-file="$BASE/munge/munge.key" \
    --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/log/munged.log" \
    --seed-file="$BASE/munge/munged.seed"
  for _ in $(seq 50); do
    munge -S "$sock" -n 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1 && break
    sleep 0.2
  done
  munge -S "$sock" -n | unmunge -S "$sock" >/dev/null || die "munged did not come up (see $BASE/log)"

  local host ctld_port slurmd_port cpus mem
  host=$(hostname -s)
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  [ "$ctld_port" != "$slurmd_port" ] || slurmd_port=$(free_port)
  cpus=$(nproc)
  mem=$(($(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 80 / 100))
  # Features=testbed: jobs here run as root with network namespaces, PulseAudio and capture,
  # which is what the profile's `constraint: testbed` of the `session` rule asks for.
  cat >"$BASE/slurm/slurm.conf" <<EOF
# Generated by scripts/slurm-cluster.sh for $BASE; removed by \`down\`.
ClusterName=reallymuted
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$BASE/slurm/state
SlurmdSpoolDir=$BASE/slurm/spool
SlurmctldPidFile=$BASE/slurm/slurmctld.pid
SlurmdPidFile=$BASE/slurm/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that gives no --mem takes the whole node
DefMemPerCPU=1024
ReturnToService=2
# finished jobs stay visible to squeue this long: the executor's status checks need it
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Features=testbed State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  ln -s "$BASE/slurm/slurm.conf" "$SYSTEM_CONF"
  export SLURM_CONF="$BASE/slurm/slurm.conf"

  start_daemon slurmctld slurmctld -D -i
  start_daemon slurmd slurmd -D
  local state=""
  for _ in $(seq 120); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
  done
  [ "$state" = idle ] || die "the node did not become idle (state '$state'; see $BASE/log)"
  {
    echo "SLURM_CONF=$SLURM_CONF"
    echo "SLURM_NODE=$host"
    echo "SLURM_PORTS=$ctld_port,$slurmd_port"
    echo "$MARKER=$BASE"
  } >"$BASE/cluster.env"
  say "cluster up: node $host ($cpus CPUs, $mem MB, feature testbed), partition debug," \
    "ports $ctld_port/$slurmd_port, config $SYSTEM_CONF -> $SLURM_CONF"
}

# --- down -------------------------------------------------------------------------------

down() {
  local conf="$BASE/slurm/slurm.conf" left
  if [ -f "$conf" ] && [ -n "$(cat "$BASE/pids/slurmctld" 2>/dev/null)" ] &&
    has_marker "$(cat "$BASE/pids/slurmctld")"; then
    # Only our private controller is reachable through this config.
    local jobs
    jobs=$(SLURM_CONF=$conf timeout 10 squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      say "cancelling jobs: $(echo $jobs)"
      # shellcheck disable=SC2086
      SLURM_CONF=$conf timeout 10 scancel $jobs 2>/dev/null || true
      for _ in $(seq 40); do
        [ -z "$(SLURM_CONF=$conf timeout 5 squeue -h -o %i 2>/dev/null || true)" ] && break
        sleep 0.5
      done
    fi
  fi
  stop_all "$(cat "$BASE/pids/slurmd" 2>/dev/null || true)=slurmd" \
    "$(cat "$BASE/pids/slurmctld" 2>/dev/null || true)=slurmctld"
  stop_all "$(cat "$BASE/pids/munged" 2>/dev/null || true)=munged"
  # Whatever still carries the marker: job steps, their children, a daemon whose PID file
  # was never written.
  local rest=()
  for pid in $(marked_pids); do
    rest+=("$pid=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-40)")
  done
  [ ${#rest[@]} -eq 0 ] || stop_all "${rest[@]}"
  if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$conf" ]; then
    rm -f "$SYSTEM_CONF"
    say "removed $SYSTEM_CONF"
  fi
  left=$(marked_pids)
  [ -z "$left" ] || die "processes still running for $BASE: $(echo $left)"
  say "cluster down: no process left for $BASE"
}

# Debian's packages put their own files in /etc (e.g. /etc/slurm/plugstack.conf): those belong
# to the installation, not to a cluster run, which is why a caller can install first, then take
# stock of /etc, then start the cluster.
install() { bash "$REPO/scripts/install-apt.sh" "$REPO/envs/apt-cluster.txt" >&2; }

status() {
  local pids
  pids=$(marked_pids)
  if [ -z "$pids" ]; then
    echo "no process running for $BASE"
  else
    # shellcheck disable=SC2086
    ps -o pid,etime,args -p "$(echo $pids | tr ' ' ,)"
  fi
  if [ -L "$SYSTEM_CONF" ]; then echo "$SYSTEM_CONF -> $(readlink "$SYSTEM_CONF")"; fi
}

if [ "${1:-}" = install ] && [ $# -eq 1 ]; then
  install
  exit
fi
[ $# -eq 2 ] || usage
BASE=$(realpath -m "$2")
case "$1" in
up) up ;;
down) down ;;
status) status ;;
*) usage ;;
esac
