#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (127.0.0.1 only), for the `slurm` tests and for trying
# `metabench sweep --executor slurm` without a real cluster. Debian's slurm-wlm (22.05) and munge, as root,
# without cgroups: containers rarely let slurmd manage them, and linuxproc/task-none need nothing from the
# kernel. Idempotent: a second call with the daemons up only checks that the cluster answers.
#
#   sudo scripts/slurm-up.sh          # install if needed, configure, start, wait until sinfo answers
#   scripts/slurm-up.sh --down        # stop the daemons this script started
set -euo pipefail

CONF_DIR=/etc/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
NODE="$(hostname)"

down() {
    for daemon in slurmd slurmctld; do
        if pid="$(pgrep -x "$daemon")"; then kill $pid || true; fi
    done
}

if [[ "${1:-}" == "--down" ]]; then
    down
    exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
    echo "slurm-up.sh: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

# Already up and answering: nothing to do (CI calls this on every run).
if command -v sinfo >/dev/null && pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null \
    && timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm-up.sh: cluster already up on $NODE"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q -o DPkg::Lock::Timeout=300 slurm-wlm munge
fi

# munge: a random key, the daemon run as the munge user (it refuses to run as root).
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi

# The node's real size, so that `sbatch --cpus-per-task` / `--mem` are checked against what exists.
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
install -d -m 0755 "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS"
cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by metabench scripts/slurm-up.sh: one node on 127.0.0.1, no cgroups.
ClusterName=metabench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (120 by default): 10 keeps the
# pre-emption test short.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
SchedulerType=sched/backfill
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmctld >/dev/null || slurmctld -c   # -c: a clean state (no jobs left from an earlier container)
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
    if timeout 5 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "slurm-up.sh: cluster up on $NODE ($CPUS CPUs, $MEM_MB MB)"
        exit 0
    fi
    # A node that came up "down" after a restart is returned to service.
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm-up.sh: the cluster did not answer within 60 s; see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2
sinfo >&2 || true
exit 1
