#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine for the Slurm tests.
#
# Usage (as root):  tests/slurm/up.sh        stop again with tests/slurm/down.sh
#
# Idempotent: run it on a fresh machine, when the cluster is already up, or after a restart that
# left the config and state behind but no daemons. It installs slurmctld, slurmd, slurm-client and
# munge (apt, only if missing), starts munged, writes /etc/slurm/slurm.conf (only when missing or
# when it carries the marker line below, so a hand-written config is left alone), starts slurmctld
# and slurmd, waits (60 s at most) until node "localhost" of partition "debug" is up (idle, or
# busy with jobs already there), resuming it if it is down or drained, and runs a one-CPU job
# through it. Not root: prints one line and exits 0, so the Slurm tests skip instead of failing.
#
# Settings chosen for fast tests (measured on a 2-core machine with Slurm 22.05):
#   AuthInfo=cred_expire=10  A requeued batch job may start again only after the job credential
#                            lifetime has passed (default 120 s, minimum 5 s): its EligibleTime is
#                            set to requeue time + cred_expire + 1. Measured from `scontrol requeue`
#                            to RUNNING again: defaults 174 s; cred_expire=10 alone 24 s; with the
#                            scheduler settings below 11-12 s; cred_expire=5 gives 6 s but leaves
#                            little slack for launching a job on a busy machine (an expired launch
#                            credential fails the launch), so 10 it is.
#   sched_interval=1         The main scheduler also runs every second (default 60 s), so a job whose
#                            begin time has just passed starts at once, not at the next event.
#   bf_interval=5            Backfill every 5 s (default 30 s).
#   DefMemPerCPU             Jobs that ask for no memory get their CPU share of it, not the whole
#                            node, so array tasks can run side by side.
#   KillWait=5               SIGTERM to SIGKILL grace (default 30 s). Submitit jobs ignore SIGTERM,
#                            and no new job starts on a node while a job there is completing: after
#                            `scancel` of such a job the next job started 12.6 s later with
#                            KillWait=10, 7.5 s with KillWait=5.
#   MinJobAge=300            The default: submitit reads results from files, not from slurmctld.
#
# State: slurmctld is started with -c (clear saved state) only when no saved job state exists;
# otherwise it recovers its jobs, as a cluster would after a restart.
set -euo pipefail

readonly MARKER="# Managed by tests/slurm/up.sh: rewritten when it runs; delete this line to keep your edits."
readonly CONF_DIR=/etc/slurm
readonly CONF="$CONF_DIR/slurm.conf"
readonly STATE_DIR=/var/spool/slurmctld
readonly SPOOL_DIR=/var/spool/slurmd
readonly LOG_DIR=/var/log/slurm
readonly RUN_DIR=/run/slurm
readonly CTLD_PID="$RUN_DIR/slurmctld.pid"
readonly SLURMD_PID="$RUN_DIR/slurmd.pid"
readonly PARTITION=debug
readonly NODE=localhost
readonly WAIT_IDLE_S=60
readonly CHECK_TIMEOUT_S=60
readonly PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "up.sh: $*"; }
die() { echo "up.sh: error: $*" >&2; exit 1; }

require_root() {
    if [[ $EUID -ne 0 ]]; then
        echo "up.sh: not root, Slurm not started (Slurm tests will be skipped)"
        exit 0
    fi
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    log "installing ${missing[*]}"
    local apt_log
    apt_log=$(mktemp)
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        rm -f "$apt_log"
        die "could not install ${missing[*]} with apt-get (output above)"
    fi
    rm -f "$apt_log"
}

# shellcheck source=tests/slurm/daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/daemons.sh"

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    log "starting munged"
    su -s /bin/sh munge -c /usr/sbin/munged || die "munged did not start; see /var/log/munge/munged.log"
    local i
    for i in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged does not answer; see /var/log/munge/munged.log"
}

real_memory_mb() {
    local total_mb margin_mb
    total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    margin_mb=$(( total_mb / 20 > 512 ? total_mb / 20 : 512 ))
    echo $(( total_mb - margin_mb ))
}

render_config() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(real_memory_mb)
    cat <<EOF
$MARKER
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=5
ReturnToService=2
JobRequeue=1
MinJobAge=300
KillWait=5
InactiveLimit=0
MessageTimeout=10
MailProg=/bin/true
SlurmdTimeout=300
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$NODE NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$(( mem_mb / cpus ))
EOF
}

# Sets CONFIG_CHANGED=1 when it (re)writes slurm.conf.
CONFIG_CHANGED=0
write_config() {
    local wanted
    wanted=$(render_config)
    mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR"
    if [[ -f $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
        log "keeping $CONF: it has no marker line, so it is not ours"
        return
    fi
    if [[ -f $CONF ]] && [[ $(<"$CONF") == "$wanted" ]]; then
        return
    fi
    log "writing $CONF"
    printf '%s\n' "$wanted" >"$CONF.tmp"
    mv -f "$CONF.tmp" "$CONF"
    CONFIG_CHANGED=1
}

stop_daemon() {
    local pidfile=$1 name=$2 pids i
    pids=$(daemon_pids "$pidfile" "$name")
    [[ -n $pids ]] || return 0
    log "stopping $name"
    # shellcheck disable=SC2086
    kill $pids
    for i in $(seq 100); do
        [[ -n $(daemon_pids "$pidfile" "$name") ]] || return 0
        sleep 0.1
    done
    die "$name (pid $pids) did not stop"
}

start_daemons() {
    if [[ $CONFIG_CHANGED -eq 1 ]]; then
        stop_daemon "$SLURMD_PID" slurmd
        stop_daemon "$CTLD_PID" slurmctld
    fi
    if [[ -z $(daemon_pids "$CTLD_PID" slurmctld) ]]; then
        if [[ -e $STATE_DIR/job_state ]]; then
            log "starting slurmctld (recovering saved state)"
            slurmctld || die "slurmctld did not start; see $LOG_DIR/slurmctld.log"
        else
            log "starting slurmctld (no saved state: -c)"
            slurmctld -c || die "slurmctld did not start; see $LOG_DIR/slurmctld.log"
        fi
    fi
    if [[ -z $(daemon_pids "$SLURMD_PID" slurmd) ]]; then
        log "starting slurmd"
        slurmd || die "slurmd did not start; see $LOG_DIR/slurmd.log"
    fi
}

node_state() {
    timeout 5 sinfo -h -p "$PARTITION" -n "$NODE" -o %t 2>/dev/null | head -n1 || true
}

wait_until_up() {
    local deadline=$(( SECONDS + WAIT_IDLE_S )) state=""
    while (( SECONDS < deadline )); do
        state=$(node_state)
        case $state in
            idle | mix | alloc | comp)
                echo "$state"
                return
                ;;
            down | drain | drng | fail | inval)
                log "node $NODE is $state; resuming it" >&2
                scontrol update nodename="$NODE" state=resume 2>/dev/null || true
                ;;
        esac
        sleep 1
    done
    die "node $NODE of partition $PARTITION not up after ${WAIT_IDLE_S}s (last state: '${state:-no answer}');" \
        "see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
}

check_job_runs() {
    local start=$EPOCHREALTIME
    if ! timeout "$CHECK_TIMEOUT_S" srun --quiet -p "$PARTITION" -N1 -n1 --mem=64 -t 1 -J up-check true; then
        die "a one-CPU job did not run within ${CHECK_TIMEOUT_S}s; see $LOG_DIR/slurmd.log"
    fi
    awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "up.sh: check job ran in %.1f s\n", b - a }'
}

main() {
    require_root
    install_packages
    start_munge
    write_config
    start_daemons
    local state
    state=$(wait_until_up)
    echo "slurm up: partition $PARTITION, node $NODE $state, CPUs=$(nproc)"
    if [[ $state == alloc ]]; then
        log "node fully allocated; skipping the check job"
    else
        check_job_runs
    fi
}

main "$@"
