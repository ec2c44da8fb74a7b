#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the queue tests: installs Debian's slurm-wlm and
# munge when missing, writes a private configuration under DIR and starts munged, slurmctld and
# slurmd there; 'stop' ends exactly the daemons it started (their pid files are in DIR).
#   bash tests/slurm/slurm.sh start DIR     -> prints SLURM_CONF=DIR/slurm.conf once sinfo shows the node idle
#   bash tests/slurm/slurm.sh stop DIR
# Needs root (apt-get, munged, slurmd). Exits non-zero with the reason when SLURM cannot start.
set -euo pipefail
mode="${1:?start|stop}"; dir="$(mkdir -p "${2:?DIR}" && cd "$2" && pwd)"

stop() {
    for name in slurmd slurmctld munged; do
        pidfile="$dir/$name.pid"
        if [ -f "$pidfile" ]; then
            pid="$(cat "$pidfile")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
}

if [ "$mode" = stop ]; then stop; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "slurm.sh: SLURM is not installed and this is not root (apt-get needs root)" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || { echo "slurm.sh: apt-get update failed" >&2; exit 1; }
    apt-get install -y -qq slurm-wlm munge >/dev/null || { echo "slurm.sh: apt-get install slurm-wlm munge failed" >&2; exit 1; }
fi

host="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))"
mkdir -p "$dir/state" "$dir/spool" "$dir/munge" "$dir/log"
chmod 700 "$dir/munge"
# a private munge key and socket: the test does not touch (or need) a system munged
[ -f "$dir/munge/munge.key" ] || { dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 2>/dev/null; chmod 400 "$dir/munge/munge.key"; }
socket="$dir/munge/munge.socket"
cat > "$dir/slurm.conf" <<CONF
ClusterName=picker3d-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=picker3d Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$dir/slurm.conf"
stop   # leftovers of an earlier run in the same DIR
/usr/sbin/munged --force --key-file="$dir/munge/munge.key" --socket="$socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed" \
    || { echo "slurm.sh: munged did not start: $(tail -3 "$dir/log/munged.log" 2>/dev/null)" >&2; exit 1; }
slurmctld -f "$SLURM_CONF" -i || { echo "slurm.sh: slurmctld did not start: $(tail -3 "$dir/log/slurmctld.log")" >&2; stop; exit 1; }
slurmd -f "$SLURM_CONF" || { echo "slurm.sh: slurmd did not start: $(tail -3 "$dir/log/slurmd.log")" >&2; stop; exit 1; }
for _ in $(seq 60); do
    if sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "slurm.sh: the node never came up idle: $(sinfo -N 2>&1 | tail -2); $(tail -3 "$dir/log/slurmctld.log")" >&2
stop
exit 1
