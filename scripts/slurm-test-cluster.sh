#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for tests/test_slurm.py (needs root).
#
#   scripts/slurm-test-cluster.sh start [DIR]   install slurm-wlm + munge if missing, write
#                                              /etc/slurm/slurm.conf, start munged, slurmctld
#                                              and slurmd, wait until the node is idle
#   scripts/slurm-test-cluster.sh stop [DIR]    stop exactly the daemons that start recorded in
#                                              DIR/pids and remove the slurm.conf it wrote
#
# DIR (default /tmp/vitct-slurm) holds the daemons' state, logs and the recorded PIDs. No
# systemd: the daemons are started by hand. No accounting database: sacct does not work, so the
# Snakemake profile must query job states with squeue (slurm-status-command: squeue), which only
# sees finished jobs for MinJobAge seconds after they end.
#
# Why stop removes slurm.conf: every `snakemake` start (any executor) imports the SLURM executor
# plugin, which runs `scontrol show config` (10 s timeout) whenever `sinfo` is on the PATH. With
# a slurm.conf but no controller that call hangs ~9 s (`snakemake -n` took 10.3 s instead of
# 1.0 s); without slurm.conf it fails in milliseconds. The packages stay, so a restart is quick.
set -euo pipefail

ACTION=${1:-}
DIR=${2:-/tmp/vitct-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by vitct scripts/slurm-test-cluster.sh"
MIN_JOB_AGE=300 # seconds squeue keeps a finished job; > 3 x the profile's first status delay

die() { echo "slurm-test-cluster: $*" >&2; exit 1; }

install_packages() {
	command -v slurmctld >/dev/null && command -v munged >/dev/null && return
	command -v apt-get >/dev/null || die "slurm-wlm/munge are missing and apt-get is unavailable"
	echo "installing slurm-wlm and munge"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null ||
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
}

write_conf() {
	if [[ -e $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
		die "$CONF exists and is not ours: refusing to overwrite a real cluster's config"
	fi
	local host mem_mb
	host=$(hostname -s)
	mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024)) # leave 1 GiB
	rm -rf "$DIR/ctld" "$DIR/d" # a fresh cluster: no jobs or node states from an earlier one
	mkdir -p /etc/slurm "$DIR/ctld" "$DIR/d"
	cat >"$CONF" <<EOF
$MARK
# state and logs: $DIR
ClusterName=vitct-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=$MIN_JOB_AGE
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_for() { # seconds, description, command...
	local limit=$1 what=$2
	shift 2
	for ((i = 0; i < limit * 5; i++)); do
		"$@" >/dev/null 2>&1 && return
		sleep 0.2
	done
	die "$what did not come up within ${limit}s (logs in $DIR)"
}

launch() { # name, pid file, command...: start a daemon and record its PID at once
	local name=$1 pidfile=$2
	shift 2
	rm -f "$pidfile"
	"$@"
	wait_for 10 "$name's PID file" test -s "$pidfile"
	echo "$name $(cat "$pidfile")" >>"$DIR/pids"
}

start() {
	[[ $(id -u) == 0 ]] || die "must run as root"
	[[ -e $DIR/pids ]] && die "$DIR/pids exists: a test cluster is running (stop it first)"
	install_packages
	for daemon in munged slurmctld slurmd; do
		pgrep -x "$daemon" >/dev/null && die "a $daemon not started by this script is running"
	done
	write_conf
	# munged runs as user munge with Debian's default files (it may not reach DIR)
	mkdir -p /run/munge
	chown munge:munge /run/munge
	chmod 0755 /run/munge
	launch munged /run/munge/munged.pid runuser -u munge -- munged
	wait_for 10 munged munge -n
	launch slurmctld "$DIR/slurmctld.pid" slurmctld
	wait_for 20 slurmctld scontrol ping
	launch slurmd "$DIR/slurmd.pid" slurmd
	wait_for 30 "the node" bash -c "sinfo -h -N -o %t | grep -qx idle"
	echo "SLURM test cluster up: $(sinfo -h -N -o '%N: %c CPUs, %m MB, %t')"
}

stop() {
	if [[ -e $DIR/pids ]]; then
		local name pid
		# Jobs first (every job on this cluster is a test's): their processes are not the daemons'.
		local jobs=()
		scontrol ping >/dev/null 2>&1 && mapfile -t jobs < <(squeue -h -o %i)
		if ((${#jobs[@]})); then
			scancel --full "${jobs[@]}" || true
			for ((i = 0; i < 50; i++)); do
				[[ -z $(squeue -h -o %i) ]] && break
				sleep 0.2
			done
		fi
		while read -r name pid; do # only processes still called as recorded (PIDs get reused)
			[[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || continue
			kill "$pid"
			for ((i = 0; i < 50; i++)); do
				[[ -e /proc/$pid ]] || break
				sleep 0.2
			done
			[[ -e /proc/$pid ]] && kill -KILL "$pid"
		done < <(tac "$DIR/pids") # slurmd, slurmctld, then munged
		rm -f "$DIR/pids"
	fi
	if [[ -e $CONF ]] && grep -qxF "$MARK" "$CONF"; then
		rm -f "$CONF"
	fi
	echo "SLURM test cluster stopped"
}

case $ACTION in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop [DIR]" ;;
esac
