# Sourced by scripts/test: a throw-away single-node Slurm cluster on loopback.
# Debian's packages (installed when missing, without Recommends: with them it is 42
# packages), munged as the munge user on a private socket, slurmctld and slurmd as root on
# private ports with a private spool, no systemd. `stop_slurm` stops and removes it.
#
#   start_slurm [slurm.conf lines]   sets SLURM_CONF (exported) and slurm_dir
slurm_dir=""
# Stops the cluster in $slurm_dir (its daemons' pid files say which processes) and
# removes it. Callable from another shell: `slurm_dir=DIR stop_slurm`.
stop_slurm() {
  if [ -n "$slurm_dir" ] && [ -d "$slurm_dir" ]; then
    local pids=() f pid
    # Jobs still there end first: their steps would outlive the daemons.
    SLURM_CONF="$slurm_dir/slurm.conf" timeout 10 scancel -u "$(id -un)" 2>/dev/null || true
    for f in "$slurm_dir/slurmd.pid" "$slurm_dir/slurmctld.pid" "$slurm_dir/munge/pid"; do
      if [ -s "$f" ]; then
        pids+=("$(cat "$f")")
      fi
    done
    for pid in "${pids[@]}"; do
      kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
    rm -rf "$slurm_dir"
  fi
  slurm_dir=""
  unset SLURM_CONF
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
start_slurm() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
    fi
  fi
  if ! command -v slurmctld >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "$0: the Slurm tests need root and Debian's slurmctld slurmd slurm-client munge" >&2
    exit 1
  fi
  slurm_dir="$(mktemp -d /tmp/ps-globus-slurm.XXXXXX)"
  chmod 755 "$slurm_dir"
  mkdir -p "$slurm_dir/munge" "$slurm_dir/run" "$slurm_dir/state" "$slurm_dir/spool"
  chown munge:munge "$slurm_dir/munge" "$slurm_dir/run"
  # munged wants its key private, and its socket's directory open to every user.
  chmod 700 "$slurm_dir/munge"
  chmod 755 "$slurm_dir/run"
  runuser -u munge -- dd if=/dev/urandom of="$slurm_dir/munge/key" bs=128 count=1 status=none
  chmod 400 "$slurm_dir/munge/key"
  runuser -u munge -- /usr/sbin/munged --socket="$slurm_dir/run/munge.socket" \
    --key-file="$slurm_dir/munge/key" --pid-file="$slurm_dir/munge/pid" \
    --log-file="$slurm_dir/munge/log" --seed-file="$slurm_dir/munge/seed"
  local host ctld_port d_port
  host="$(hostname -s)"
  ctld_port="$(free_port)"
  d_port="$(free_port)"
  cat > "$slurm_dir/slurm.conf" <<CONF
ClusterName=psgtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$slurm_dir/run/munge.socket
CredType=cred/munge
StateSaveLocation=$slurm_dir/state
SlurmdSpoolDir=$slurm_dir/spool
SlurmctldPidFile=$slurm_dir/slurmctld.pid
SlurmdPidFile=$slurm_dir/slurmd.pid
SlurmctldLogFile=$slurm_dir/slurmctld.log
SlurmdLogFile=$slurm_dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
# CPUs only (no memory), shared: the tests' jobs mostly wait, several at once.
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
$*
CONF
  export SLURM_CONF="$slurm_dir/slurm.conf"
  /usr/sbin/slurmctld -f "$SLURM_CONF" -i
  /usr/sbin/slurmd -f "$SLURM_CONF"
  local i
  for i in $(seq 1 100); do
    if [ -s "$slurm_dir/slurmctld.pid" ] && [ -s "$slurm_dir/slurmd.pid" ] \
      && timeout 5 sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      return 0
    fi
    sleep 0.1
  done
  echo "$0: the throw-away Slurm cluster did not come up; its logs:" >&2
  tail -n 20 "$slurm_dir"/*.log "$slurm_dir/munge/log" >&2 || true
  stop_slurm
  exit 1
}
