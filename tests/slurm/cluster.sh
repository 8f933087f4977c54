#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, for tests/test_slurm.py.
#
#   tests/slurm/cluster.sh up      install (if missing), configure and start; wait until the node is idle
#   tests/slurm/cluster.sh down    cancel its jobs, stop ONLY the daemons whose PID files it wrote,
#                                  remove the configuration it wrote
#   tests/slurm/cluster.sh status  print what is running; exit 0 if the cluster is up, 3 if not
#
# Exit status of up/down: 0 done; 77 this machine cannot host the cluster (the reason is the last
# line on stderr, starting with "SKIP:"); anything else is a failure.
#
# Layout: Debian's slurmctld + slurmd + munge, no accounting daemon (slurmdbd), so `sacct` cannot
# answer and the snakemake plugin must poll with `squeue`. Daemon state, logs and PID files live in
# $BACKSAL_SLURM_STATE_DIR (default /tmp/backsal-slurm). slurm.conf itself has to be at
# /etc/slurm/slurm.conf: the snakemake SLURM plugin strips SLURM_CONF from the environment of its
# jobs, so inside a job only the default path is found.
set -euo pipefail

STATE_DIR=${BACKSAL_SLURM_STATE_DIR:-/tmp/backsal-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
GRES_CONF=$CONF_DIR/gres.conf
# The first line of every file this script writes; it is how `up` recognises a configuration it may
# overwrite and `down` one it may delete. A slurm.conf without it belongs to somebody else.
MARKER="# Written by backsal tests/slurm/cluster.sh: a throwaway single-node test cluster."
# Partitions of the test cluster: jobs go to the default one unless told otherwise, so a test can
# prove that a partition override reached sbatch by sending jobs to the other.
DEFAULT_PARTITION=main
OTHER_PARTITION=alt
# The fake GPU's type, for `gpu_model` (the plugin turns it into --gpus=<model>:<n>).
GPU_TYPE=testgpu
PACKAGES=(slurmctld slurmd slurm-client munge)
EXIT_SKIP=77

log() { echo "cluster.sh: $*" >&2; }
skip() {
    echo "SKIP: $*" >&2
    exit "$EXIT_SKIP"
}
die() {
    echo "cluster.sh: error: $*" >&2
    exit 1
}

# --- PID files ---------------------------------------------------------------------------------

# Print the PID recorded in file $1 if that process is alive and is the program $2; the name check
# guards against a stale PID file whose number has been reused by an unrelated process.
live_pid() {
    local file=$1 name=$2 pid comm
    [[ -s $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" ]] || return 1
    echo "$pid"
}

# Stop the daemon $2 whose PID file is $1 (TERM, then KILL after 15 s), and remove the file.
stop_pidfile() {
    local file=$1 name=$2 pid i
    if pid=$(live_pid "$file" "$name"); then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            [[ -e /proc/$pid ]] || break
            sleep 0.1
        done
        if [[ -e /proc/$pid ]]; then
            log "$name did not stop on TERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

# Wait up to $3 seconds for the daemon $2 to write a live PID into $1.
wait_pidfile() {
    local file=$1 name=$2 timeout=$3 i
    for ((i = 0; i < timeout * 10; i++)); do
        live_pid "$file" "$name" >/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# --- checks ------------------------------------------------------------------------------------

ours() { [[ -f $1 ]] && [[ $(head -n 1 "$1") == "$MARKER" ]]; }

check_host() {
    [[ $(id -u) -eq 0 ]] || skip "needs root (to install packages, write /etc/slurm and run slurmd)"
    if [[ -e $CONF ]] && ! ours "$CONF"; then
        skip "$CONF exists and was not written by this harness; not touching a real SLURM installation"
    fi
    # A controller or node daemon that is not ours would fight ours for the ports.
    local name pidfile pid
    for name in slurmctld slurmd; do
        pidfile=$STATE_DIR/$name.pid
        for pid in $(pgrep -x "$name" || true); do
            if [[ $(live_pid "$pidfile" "$name" || true) != "$pid" ]]; then
                skip "a $name (pid $pid) not started by this harness is running"
            fi
        done
    done
}

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sinfo sbatch squeue scontrol munged munge unmunge; do
        command -v "$cmd" >/dev/null || missing=1
    done
    ((missing)) || return 0
    command -v apt-get >/dev/null || skip "SLURM is not installed and there is no apt-get to install it"
    log "installing ${PACKAGES[*]}"
    # Recommends would pull in a mail server and documentation; none of it is needed here.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2; then
        # Stale package lists are the usual reason on a fresh machine.
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || skip "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2 ||
            skip "apt-get install ${PACKAGES[*]} failed"
    fi
}

# --- configuration -----------------------------------------------------------------------------

# Write $2 (a string) to file $1 unless it already holds exactly that; succeed only if it changed.
write_if_changed() {
    local file=$1 content=$2
    if [[ -f $file ]] && [[ $(cat "$file") == "$content" ]]; then
        return 1
    fi
    printf '%s\n' "$content" >"$file"
    return 0
}

# Print this machine's node line, as slurmd itself measures it (CPUs, sockets, memory).
node_hardware() {
    # `slurmd -C` prints "NodeName=<host> CPUs=... RealMemory=..." and an UpTime line.
    slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //'
}

# Write slurm.conf and gres.conf; succeed only if either changed (then running daemons must restart).
write_config() {
    local host hw changed=1
    host=$(hostname -s)
    hw=$(node_hardware)
    mkdir -p "$CONF_DIR"
    local conf
    conf=$(
        cat <<EOF
$MARKER
# Do not edit: tests/slurm/cluster.sh rewrites it and deletes it on \`down\`.
ClusterName=backsal-test
# The hostname may not resolve to a reachable address everywhere; loopback always is.
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# There is no mail server; the default MailProg would only log an error at every start.
MailProg=/bin/true
# No cgroups: a container or VM may not delegate them; these plugins need none.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No slurmdbd: nothing records finished jobs, so sacct has nothing to say.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# (No AccountingStorageTRES=gres/gpu: slurmctld refuses to start with it unless slurmdbd runs.)
# Finished jobs stay visible to squeue/scontrol for 5 minutes; the snakemake plugin's squeue
# polling relies on that (it switches to sacct if MinJobAge < 3x its first status-check delay).
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
# cons_tres is what understands --gpus; CR_Core_Memory makes --mem requests count.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job that asks for no memory would otherwise get the whole node and run alone.
DefMemPerCPU=500
GresTypes=gpu
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
# One fake GPU (see gres.conf), so rules that ask for a GPU are accepted on a GPU-less machine.
NodeName=$host NodeAddr=127.0.0.1 $hw Gres=gpu:$GPU_TYPE:1 State=UNKNOWN
PartitionName=$DEFAULT_PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=$OTHER_PARTITION Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
    )
    local gres
    gres=$(
        cat <<EOF
$MARKER
# A GPU that is /dev/null: SLURM counts and allocates it, nothing can compute on it.
NodeName=$host Name=gpu Type=$GPU_TYPE File=/dev/null
EOF
    )
    write_if_changed "$CONF" "$conf" && changed=0
    write_if_changed "$GRES_CONF" "$gres" && changed=0
    return $changed
}

# --- daemons -----------------------------------------------------------------------------------

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    # A munged that already answers (ours from an earlier `up`, or the system's) is used as it is.
    munge_works && return 0
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    # Without systemd nobody creates the socket directory; munged refuses to run as root.
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 "$STATE_DIR/munge"
    log "starting munged"
    # 9>&-: a daemon must not inherit the lock (see lock()), or it would hold it for its lifetime.
    runuser -u munge -- munged --pid-file="$STATE_DIR/munge/munged.pid" \
        --log-file="$STATE_DIR/munge/munged.log" 9>&-
    local i
    for ((i = 0; i < 50; i++)); do
        munge_works && return 0
        sleep 0.1
    done
    die "munged did not start; see $STATE_DIR/munge/munged.log"
}

start_daemon() {
    local name=$1
    shift
    live_pid "$STATE_DIR/$name.pid" "$name" >/dev/null && return 0
    log "starting $name"
    "$name" "$@" 9>&- || die "$name failed to start; see $STATE_DIR/$name.log"
    wait_pidfile "$STATE_DIR/$name.pid" "$name" 15 || die "$name did not come up; see $STATE_DIR/$name.log"
}

# The node's state as sinfo reports it ("idle", "down*", ...); empty if the controller does not answer.
node_state() {
    # sinfo retries an unreachable controller for a long time; a short answer is all we want.
    timeout 5 sinfo -h -N -n "$(hostname -s)" -o %t 2>/dev/null | head -n 1
}

# Fail with the end of the daemon's log if the daemon $1 is not running.
require_alive() {
    local name=$1
    live_pid "$STATE_DIR/$name.pid" "$name" >/dev/null && return 0
    tail -n 5 "$STATE_DIR/$name.log" >&2 2>/dev/null || true
    die "$name exited; see $STATE_DIR/$name.log"
}

wait_node_idle() {
    local i state=""
    for ((i = 0; i < 60; i++)); do
        # slurmctld writes its PID file before it reads the whole configuration and may still die.
        require_alive slurmctld
        require_alive slurmd
        state=$(node_state || true)
        case $state in
        idle | mix | alloc) return 0 ;;
        down* | drain* | drng*)
            # Left over from an earlier run of this cluster, e.g. after a restart.
            scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
            ;;
        esac
        sleep 0.5
    done
    die "node did not become idle within 30 s (state: '${state:-no answer}'); see $STATE_DIR/slurmctld.log and slurmd.log"
}

up() {
    check_host
    install_packages
    mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/slurmd"
    if write_config; then
        # A running daemon of ours would keep the old configuration.
        stop_pidfile "$STATE_DIR/slurmd.pid" slurmd
        stop_pidfile "$STATE_DIR/slurmctld.pid" slurmctld
    fi
    start_munge
    # -c: start from an empty job table; nothing from an earlier test run is worth recovering.
    start_daemon slurmctld -c
    start_daemon slurmd
    wait_node_idle
    log "up: node $(hostname -s) is $(node_state); state in $STATE_DIR"
}

down() {
    if ours "$CONF" && live_pid "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null; then
        # Every job on this cluster came from the tests; slurmstepd processes of running jobs
        # would outlive slurmd.
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086  # one job id per word
            scancel $jobs 2>/dev/null || true
            local i
            for ((i = 0; i < 50; i++)); do
                [[ -z $(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null || true) ]] && break
                sleep 0.2
            done
        fi
    fi
    stop_pidfile "$STATE_DIR/slurmd.pid" slurmd
    stop_pidfile "$STATE_DIR/slurmctld.pid" slurmctld
    stop_pidfile "$STATE_DIR/munge/munged.pid" munged
    # A slurm.conf naming a controller that is gone makes every SLURM client (and snakemake's
    # SLURM plugin, which asks `scontrol show config` when it is imported) wait for it.
    local file
    for file in "$CONF" "$GRES_CONF"; do
        if ours "$file"; then rm -f "$file"; fi
    done
    log "down"
}

# Print what runs; succeed only if this harness's slurmctld and slurmd both run.
status() {
    local name pidfile pid up=0
    for name in munged slurmctld slurmd; do
        pidfile=$STATE_DIR/$name.pid
        [[ $name == munged ]] && pidfile=$STATE_DIR/munge/munged.pid
        if pid=$(live_pid "$pidfile" "$name"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running (not started by this harness)"
            [[ $name == munged ]] || up=3
        fi
    done
    if ours "$CONF"; then
        echo "node: $(node_state || true)"
    fi
    return $up
}

# Serialise up/down: two test processes (pytest-xdist workers, say) may call them at once. The
# lock is file descriptor 9 of this script; the daemons it starts get it closed.
lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w 600 9 || die "could not lock $STATE_DIR/lock"
}

case ${1:-} in
up | down)
    # Before taking the lock, which lives in a directory a non-root user may not write to.
    [[ $(id -u) -eq 0 ]] || skip "needs root (to install packages, write /etc/slurm and run slurmd)"
    lock
    "$1"
    ;;
status) status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
