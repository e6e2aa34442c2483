# shellcheck shell=bash
# Plankline on SLURM: what the sbatch templates share (sourced, not run).
#
# Staging: a job works in node scratch, ${PLANKLINE_SCRATCH:-/scratch/$USER}/$SLURM_JOB_ID
# (XSEDE Comet's /scratch/$USER/$SLURM_JOBID: fast local SSD, visible only on the node,
# wiped after the job), copies its inputs there and its finished outputs back.
#
# Saving work: outputs go back to the drive file by file, each through a temporary name
# and a rename (a reader never sees half a file), every chunk's outputs before its done
# marker; so the drive only ever holds complete chunks, and the next submission skips them.
# Copies happen every PLANKLINE_SYNC_EVERY seconds (default 300), at the end, and when the
# job is told to stop: scancel (SIGTERM to every process, SIGKILL KillWait seconds later)
# or the wall-time warning the templates ask for (--signal=B:USR1@300).

set -euo pipefail

plk_log() { printf '%s plankline-slurm[%s]: %s\n' "$(date +%H:%M:%S)" "${SLURM_JOB_ID:-?}" "$*" >&2; }

plk_die() { plk_log "error: $*"; exit 1; }

# plk_need VAR...: fail clearly when the driver did not set what the job needs.
plk_need() {
    local name
    for name in "$@"; do
        [[ -n "${!name:-}" ]] || plk_die "$name is not set (submit with scripts/slurm/submit_drive.py)"
    done
}

# plk_scratch: make this job's scratch folder, WORK, removed when the job ends.
plk_scratch() {
    local root="${PLANKLINE_SCRATCH:-/scratch/${USER:-$(id -un)}}"
    WORK="$root/${SLURM_JOB_ID:?not inside a SLURM job}"
    mkdir -p "$WORK" || plk_die "cannot make scratch folder $WORK (set PLANKLINE_SCRATCH to node-local storage)"
    trap 'rm -rf -- "$WORK"' EXIT
    # a container sees the drive and scratch only where they are bound (Singularity/Apptainer)
    local bind="$PLANKLINE_DRIVE,$root"
    export SINGULARITY_BIND="${SINGULARITY_BIND:+$SINGULARITY_BIND,}$bind"
    export APPTAINER_BIND="${APPTAINER_BIND:+$APPTAINER_BIND,}$bind"
}

# plk_copy SRC DST: copy through a temporary name beside DST, then rename (atomic).
plk_copy() {
    local dst_dir tmp
    dst_dir=$(dirname -- "$2")
    mkdir -p -- "$dst_dir"
    tmp="$dst_dir/.$(basename -- "$2").slurm.tmp"
    cp -p -- "$1" "$tmp" && mv -f -- "$tmp" "$2"
}

# plk_start CMD...: start a worker command in the background (plk_watch waits for it).
PLK_PIDS=()
plk_start() {
    "$@" &
    PLK_PIDS+=("$!")
}

plk_alive() {
    local pid
    for pid in "${PLK_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}

# plk_watch: wait for the started commands, calling plk_sync every PLANKLINE_SYNC_EVERY
# seconds; then the last plk_sync. Returns the first non-zero exit status (0 if none).
plk_watch() {
    local every="${PLANKLINE_SYNC_EVERY:-300}" ticks=0 pid rc=0 status
    while plk_alive; do
        sleep 1 &
        wait "$!" || true # a trapped signal interrupts this wait at once
        ticks=$((ticks + 1))
        if ((ticks % every == 0)); then plk_sync; fi
    done
    for pid in "${PLK_PIDS[@]}"; do
        status=0
        wait "$pid" || status=$?
        if ((rc == 0)); then rc=$status; fi
    done
    plk_sync
    return "$rc"
}

# plk_sync: copy finished work back to the drive; each template defines its own.
plk_sync() { :; }

# On scancel or the wall-time warning: stop the workers, save what is finished, exit.
plk_on_signal() {
    trap - TERM USR1
    plk_log "$1 received: stopping, saving finished work to $PLANKLINE_DRIVE"
    local pid
    for pid in "${PLK_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PLK_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    plk_sync
    plk_log "saved; submit the drive again to finish it (done work is skipped)"
    exit 143
}
trap 'plk_on_signal SIGTERM' TERM
trap 'plk_on_signal SIGUSR1' USR1

# plk_count DIR PATTERN: how many files in DIR match PATTERN.
plk_count() { find "$1" -maxdepth 1 -name "$2" 2>/dev/null | wc -l; }

# plk_lines FILE: print the non-empty lines of FILE (the plan's lists).
plk_lines() { grep -v '^[[:space:]]*$' -- "$1" || true; }
