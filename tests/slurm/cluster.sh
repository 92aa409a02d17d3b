#!/usr/bin/env bash
# A private single-node SLURM cluster for the tests: munged, slurmctld and slurmd run as
# root from a state directory, with one fake GPU so that GPU rules can be scheduled.
#
#   tests/slurm/cluster.sh start    install slurm + munge if missing, start, wait until idle
#   tests/slurm/cluster.sh stop     cancel all jobs, stop the daemons, remove the state dir
#   tests/slurm/cluster.sh status   exit 0 when the node answers and is usable
#   tests/slurm/cluster.sh env      print the export line the SLURM clients need
#
# The clients (sbatch, squeue, ...) find the cluster through SLURM_CONF, so after `start`:
#   eval "$(tests/slurm/cluster.sh env)"
# (and, where /etc/slurm/slurm.conf is absent, through /run/slurm/conf without it).
# Environment: HEPRED_SLURM_DIR (state dir, default /tmp/hepred-slurm),
# HEPRED_SLURMCTLD_PORT / HEPRED_SLURMD_PORT (default 6817 / 6818).
set -euo pipefail

STATE=${HEPRED_SLURM_DIR:-/tmp/hepred-slurm}
CTLD_PORT=${HEPRED_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${HEPRED_SLURMD_PORT:-6818}
CONF=$STATE/slurm.conf
MUNGE_SOCKET=$STATE/munge/munge.socket.2
NODE=localhost
# Where SLURM commands look when SLURM_CONF is unset, as on a configless compute node. The
# executor plugin runs `srun` inside each job with all SLURM_* variables removed, so the
# cluster must be findable from here too.
RUN_CONF=/run/slurm/conf
export SLURM_CONF=$CONF

log() { echo "cluster.sh: $*" >&2; }

require_root() {
    if [[ $(id -u) -ne 0 ]]; then
        log "must run as root (it installs packages and runs slurmd as root)"
        exit 2
    fi
}

install_packages() {
    local missing=0 bin
    for bin in munged slurmctld slurmd sbatch squeue sinfo scontrol; do
        command -v "$bin" >/dev/null || missing=1
    done
    [[ $missing -eq 0 ]] && return 0
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be absent or stale on a fresh machine: update once and retry.
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$STATE.apt.log" 2>&1; then
        apt-get update -q >>"$STATE.apt.log" 2>&1
        apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$STATE.apt.log" 2>&1 || {
            log "apt-get install failed, see $STATE.apt.log"
            exit 1
        }
    fi
}

# Node hardware line from slurmd itself, so CPUs/sockets/cores match what slurmd detects.
# Memory: 90 % of the physical total rather than of what is free now, so that whether a
# job's request fits does not depend on what else runs on the machine at start (no cgroup
# enforces it here); slurmd accepts any value up to the total.
node_line() {
    local hw total_mb
    hw=$(slurmd -C | head -n 1)
    total_mb=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hw")
    hw=$(sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//' <<<"$hw")
    echo "NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $hw RealMemory=$((total_mb * 90 / 100)) Gres=gpu:1 State=UNKNOWN"
}

write_config() {
    mkdir -p "$STATE"/{munge,ctld,spool,log}
    chmod 0700 "$STATE/munge"
    cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh; removed again by 'cluster.sh stop'.
ClusterName=hepred-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s, so that the killed run's credential has expired): keep the tests short.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# cgroups are not usable in this kind of sandbox: track processes through /proc.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (default 60 s), e.g. requeued ones whose hold has ended.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Jobs without --mem must not claim the whole node.
DefMemPerCPU=1000
# No accounting database: the snakemake executor polls with squeue, which needs finished
# jobs to stay visible for a while (MinJobAge well above 3 x its first status interval).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
JobRequeue=1
KillWait=10
ReturnToService=2
GresTypes=gpu
$(node_line)
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # A fake GPU: slurmd drops a GPU without a device file, and any file will do here since
    # no cgroup constrains devices. Jobs get the allocation, not a CUDA device.
    : >"$STATE/nvidia0"
    echo "NodeName=$NODE Name=gpu File=$STATE/nvidia0" >"$STATE/gres.conf"
}

link_run_conf() {
    if [[ -e /etc/slurm/slurm.conf ]]; then
        log "/etc/slurm/slurm.conf exists and would win over $RUN_CONF inside jobs; move it away"
        exit 1
    fi
    if [[ -e $RUN_CONF && ! -L $RUN_CONF ]]; then
        log "$RUN_CONF exists and is not ours; is slurmd already running here?"
        exit 1
    fi
    mkdir -p "$(dirname "$RUN_CONF")"
    ln -sfn "$STATE" "$RUN_CONF"
}

unlink_run_conf() {
    if [[ -L $RUN_CONF && $(readlink "$RUN_CONF") == "$STATE" ]]; then
        rm -f "$RUN_CONF"
        rmdir --ignore-fail-on-non-empty "$(dirname "$RUN_CONF")"
    fi
}

start_daemon() {  # name, command...; runs in the foreground of its own session
    local name=$1
    shift
    setsid nohup "$@" >"$STATE/log/$name.out" 2>&1 </dev/null &
    echo $! >"$STATE/$name.daemon.pid"
}

wait_for() {  # seconds, description, test command...
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    log "timed out after ${seconds}s waiting for $what; logs in $STATE/log"
    tail -n 20 "$STATE"/log/* >&2 || true
    return 1
}

munge_works() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }

daemons_alive() {  # slurmctld keeps a dead slurmd's node "idle" for minutes: check them
    local name pid
    for name in munged slurmctld slurmd; do
        pid=$(cat "$STATE/$name.daemon.pid" 2>/dev/null) || return 1
        [[ -d /proc/$pid ]] || return 1
    done
}

healthy() { [[ -f $CONF ]] && daemons_alive && node_ready; }

node_ready() {
    local state
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null) || return 1
    [[ $state == idle || $state == mix || $state == alloc ]]
}

start() {
    require_root
    mkdir -p "$(dirname "$STATE")"
    install_packages
    if healthy; then
        log "already running ($STATE)"
        return 0
    fi
    stop_daemons  # whatever a previous, half-finished start left behind
    rm -rf "$STATE"
    write_config
    link_run_conf
    mungekey --create --keyfile="$STATE/munge/munge.key" --bits=1024 >/dev/null 2>&1 ||
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=128 count=1 status=none
    chmod 0400 "$STATE/munge/munge.key"
    start_daemon munged munged --foreground --force \
        --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge/munged.seed" \
        --log-file="$STATE/log/munged.log"
    wait_for 20 munged munge_works
    start_daemon slurmctld slurmctld -D -i -f "$CONF"
    wait_for 30 slurmctld scontrol ping
    start_daemon slurmd slurmd -D -N "$NODE" -f "$CONF"
    wait_for 60 "node $NODE to be idle" node_ready
    log "running: SLURM_CONF=$CONF"
}

# The daemons this script started: from its pid files, or (if those are gone) any process
# whose command line names this state directory.
our_pids() {
    local f pid
    for f in "$STATE"/*.daemon.pid; do
        [[ -f $f ]] || continue
        pid=$(<"$f")
        if [[ -d /proc/$pid ]]; then echo "$pid"; fi
    done
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$STATE/"; then
            echo "$pid"
        fi
    done
}

alive() {  # the given pids that still exist
    local pid
    for pid in "$@"; do
        if [[ -d /proc/$pid ]]; then echo "$pid"; fi
    done
}

cancel_jobs() {
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null) || return 0
    [[ -z $jobs ]] && return 0
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    wait_for 40 "jobs to end" bash -c '[[ -z $(squeue -h -o %A) ]]' || true
}

stop_daemons() {
    local pids
    pids=$(our_pids | sort -u | grep -vx "$$" || true)
    [[ -z $pids ]] && return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 20); do
        # shellcheck disable=SC2086
        pids=$(alive $pids)
        [[ -z $pids ]] && return 0
        sleep 0.5
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

stop() {
    require_root
    if [[ -f $CONF ]] && command -v squeue >/dev/null; then
        cancel_jobs
    fi
    stop_daemons
    unlink_run_conf
    rm -rf "$STATE" "$STATE.apt.log"
    log "stopped"
}

status() {
    if healthy; then
        sinfo -N -o "%N %t %c %m %G"
        return 0
    fi
    echo "not running ($STATE)"
    return 1
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
