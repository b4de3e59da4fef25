#!/usr/bin/env bash
# Stop the single-node Slurm cluster that tests/slurm/up.sh started.
#
# Usage (as root):  tests/slurm/down.sh          stop slurmd and slurmctld
#                   tests/slurm/down.sh --all    also stop munged
#
# Config (/etc/slurm/slurm.conf) and saved state (/var/spool/slurmctld) stay, so up.sh brings the
# same cluster back, with its queued jobs. Not root: prints one line and exits 0.
set -euo pipefail

readonly RUN_DIR=/run/slurm

log() { echo "down.sh: $*"; }
die() { echo "down.sh: error: $*" >&2; exit 1; }

# shellcheck source=tests/slurm/daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/daemons.sh"

stop_daemon() {
    local pidfile=$1 name=$2 pids i
    pids=$(daemon_pids "$pidfile" "$name")
    if [[ -z $pids ]]; then
        log "$name not running"
        return
    fi
    log "stopping $name"
    # shellcheck disable=SC2086
    kill $pids
    for i in $(seq 100); do
        [[ -n $(daemon_pids "$pidfile" "$name") ]] || return 0
        sleep 0.1
    done
    die "$name (pid $pids) did not stop within 10 s"
}

main() {
    if [[ $EUID -ne 0 ]]; then
        echo "down.sh: not root, nothing stopped"
        exit 0
    fi
    case ${1:-} in
        "" | --all) ;;
        *) die "unknown argument '$1' (use --all to stop munged too)" ;;
    esac
    stop_daemon "$RUN_DIR/slurmd.pid" slurmd
    stop_daemon "$RUN_DIR/slurmctld.pid" slurmctld
    if [[ ${1:-} == --all ]]; then
        stop_daemon /run/munge/munged.pid munged
    fi
}

main "$@"
