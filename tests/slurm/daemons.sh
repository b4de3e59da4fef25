# Shared by up.sh and down.sh: finding the running Slurm and munge daemons.

# Pids of the running daemon $2: from pid file $1 when it is current, else by exact program name.
# Zombies (a killed daemon not yet reaped) do not count.
daemon_pids() {
    local pidfile=$1 name=$2 pid
    if [[ -s $pidfile ]]; then
        pid=$(<"$pidfile")
        if is_live "$pid" "$name"; then
            echo "$pid"
            return
        fi
    fi
    for pid in $(pgrep -x "$name" || true); do
        if is_live "$pid" "$name"; then
            echo "$pid"
        fi
    done
}

# True when process $1 exists, runs program $2 and is not a zombie.
is_live() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat == "$1 ($2) "* ]] && [[ ${stat#"$1 ($2) "} != Z* ]]
}
