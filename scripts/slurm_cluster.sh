#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try `lit-seg ablate --launcher slurm` (and for CI's
# SLURM tests). As root, on Debian or Ubuntu:
#   scripts/slurm_cluster.sh          # install slurm-wlm and munge if needed, start, wait until ready
#   scripts/slurm_cluster.sh stop
# Idempotent: a cluster that already answers (`scontrol ping`) is left as it is. One partition,
# `debug`, holding this host with its cores and memory; no accounting database (sacct answers that
# accounting is disabled: lit-seg reads job states from squeue and the runs' records instead).
set -euo pipefail

MARK="# written by lit-seg scripts/slurm_cluster.sh"
CONF=/etc/slurm/slurm.conf
if [ "${1:-start}" = stop ]; then
    # Only the daemons this script started (its slurm.conf, their pid files): never a real cluster's.
    if ! grep -qxF "$MARK" "$CONF" 2>/dev/null; then
        echo "slurm_cluster: $CONF was not written by this script: not stopping anything" >&2
        exit 2
    fi
    for pid in /run/slurmd.pid /run/slurmctld.pid; do
        [ -s "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    exit 0
fi
if command -v scontrol >/dev/null 2>&1 && scontrol ping 2>/dev/null | grep -q "UP"; then
    echo "slurm_cluster: already running" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "scripts/slurm_cluster.sh: needs root (it installs and starts system daemons)" >&2
    exit 2
fi
if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
    echo "slurm_cluster: $CONF exists and was not written by this script: this host has a SLURM of its own;" \
         "use it (lit-seg ablate --launcher slurm) instead of a one-node test cluster" >&2
    exit 2
fi
if ! command -v slurmctld >/dev/null 2>&1; then
    echo "slurm_cluster: installing slurm-wlm and munge (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

# munge: the key the daemons authenticate with, its daemon running as its own user.
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$CONF" <<EOF
$MARK
ClusterName=litseg
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
NodeName=${host} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
    if sinfo --noheader --format=%T 2>/dev/null | grep -qE "idle|mixed|allocated"; then
        echo "slurm_cluster: up (node ${host}, ${cpus} CPUs, ${memory} MB, partition debug)" >&2
        exit 0
    fi
    scontrol update nodename="${host}" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm_cluster: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
