#!/usr/bin/env bash
# Local test topology for ballast, run from the machine's own binaries (no Docker):
#
#   MariaDB primary  127.0.0.1:3307  (server_id 1, binlog, GTID)
#   MariaDB replica  127.0.0.1:3308  (server_id 2, read_only, replicates 3307 by GTID)
#                    semi-synchronous: the primary acknowledges a commit once the replica has
#                    it (or after SEMI_SYNC_TIMEOUT_MS without its ack, then asynchronously
#                    until the replica catches up)
#   Redis Cluster    127.0.0.1:7000-7005 (3 masters + 3 replicas, no persistence)
#   RabbitMQ cluster 127.0.0.1:5681-5683 (nodes ballast1..3@localhost, one Erlang cookie,
#                    Erlang distribution on 25681-25683; guest/guest from loopback)
#
# MariaDB users: root with an EMPTY password (localhost, 127.0.0.1, %), repl/repl for
# replication. Database `test` exists on both servers.
#
# Usage: scripts/topology.sh start|stop|restart|status [mariadb|redis-cluster|rabbitmq-cluster]...
#        (no component = all)
#
# All state lives in <repo>/.topology/ (git-ignored). Everything there is test data:
# deleting the folder (after `stop`) gives a clean topology on the next `start`.
# The shared servers on 3306/6379/5672 (and the standard rabbit@localhost node) are never touched.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
TOPO="$ROOT/.topology"
MDB_DIR="$TOPO/mariadb"
RC_DIR="$TOPO/redis-cluster"
RMQ_DIR="$TOPO/rabbitmq-cluster"

PRIMARY_PORT=3307
REPLICA_PORT=3308
REDIS_PORTS=(7000 7001 7002 7003 7004 7005)
RMQ_NODES=(1 2 3) # node N: ballastN@localhost, AMQP on 5680+N, distribution on 25680+N
RMQ_AMQP_BASE=5680
RMQ_DIST_BASE=25680
REPL_USER=repl
REPL_PASSWORD=repl
SEMI_SYNC_TIMEOUT_MS=1000 # rpl_semi_sync_master_timeout: longest a commit waits for the replica

MDB_READY_TIMEOUT=30   # seconds for a mariadbd to accept connections
REPL_TIMEOUT=20        # seconds for replication threads to run and catch up
REDIS_READY_TIMEOUT=10 # seconds for a redis-server to answer PING
CLUSTER_TIMEOUT=20     # seconds for cluster_state:ok (after create or restart)
STOP_TIMEOUT=30        # seconds for a process to exit after shutdown
RMQ_READY_TIMEOUT=120  # seconds for a rabbitmq node to boot (about 6 s each on 2 cores)

# ----------------------------------------------------------------------------- helpers

log() { printf 'topology: %s\n' "$*"; }
warn() { printf 'topology: WARNING: %s\n' "$*" >&2; }
die() {
  printf 'topology: ERROR: %s\n' "$*" >&2
  exit 1
}

find_bin() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
    if [[ -x "$dir/$name" ]]; then
      printf '%s\n' "$dir/$name"
      return 0
    fi
  done
  return 1
}

need_bin() {
  find_bin "$1" || die "required binary '$1' not found (install it, e.g. apt-get install $2)"
}

# Print the tail of a log file to stderr (used when something fails to come up).
show_log_tail() {
  local file=$1
  if [[ -f "$file" ]]; then
    printf 'topology: ---- last lines of %s ----\n' "$file" >&2
    tail -n 25 "$file" >&2 || true
    printf 'topology: ----\n' >&2
  fi
}

# Is anything listening on 127.0.0.1:$1? (Uses ss so that no connection is opened:
# probing MariaDB with bare TCP connects would count as connection errors.)
port_listening() {
  local port=$1
  if command -v ss >/dev/null 2>&1; then
    ss -Hltn "sport = :$port" 2>/dev/null | grep -q .
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

# Is process $1 alive? A zombie (exited, not yet reaped by its parent -- daemons are
# re-parented to pid 1, which may reap slowly) counts as gone.
proc_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# Print $1 if it is a live process whose command line contains $2, else fail.
pid_matches() {
  local pid=$1 needle=$2 cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  proc_alive "$pid" || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *"$needle"* ]] || return 1
  printf '%s\n' "$pid"
}

# Print the first live process whose command line contains $1, else fail: the fallback when a
# pid file is gone while its server still runs (seen once: `stop` then called a live primary
# "already stopped", and the next `start` failed with "port in use").
# $2, when given, must be the program's name (the first word of the command line).
pid_by_cmdline() {
  local dir pid exe
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    if [[ -n "${2:-}" ]]; then
      exe=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
      exe=${exe%% *}
      [[ "${exe##*/}" == "$2" ]] || continue
    fi
    pid_matches "$pid" "$1" 2>/dev/null && return 0
  done
  return 1
}

# Wait until process $1 is gone (bounded), escalating to TERM and KILL.
wait_gone() {
  local pid=$1 what=$2 deadline=$((SECONDS + STOP_TIMEOUT))
  while proc_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      warn "$what (pid $pid) did not exit after ${STOP_TIMEOUT}s; sending SIGTERM"
      kill -TERM "$pid" 2>/dev/null || true
      sleep 5
      if proc_alive "$pid"; then
        warn "$what (pid $pid) still alive; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
      fi
      break
    fi
    sleep 0.1
  done
  ! proc_alive "$pid" || die "$what (pid $pid) would not stop"
}

ensure_topo_dir() {
  mkdir -p "$TOPO"
  # Belt and braces: keep the folder out of git even without a root .gitignore entry.
  [[ -f "$TOPO/.gitignore" ]] || printf '*\n' >"$TOPO/.gitignore"
}

# Serialise start/stop/restart across concurrent invocations (e.g. parallel test runs).
take_lock() {
  ensure_topo_dir
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOPO/.lock"
    flock -w 120 9 || die "could not get the lock $TOPO/.lock within 120s (another topology.sh running?)"
  fi
}

# ----------------------------------------------------------------------------- mariadb

mdb_port() {
  case $1 in
    primary) printf '%s\n' "$PRIMARY_PORT" ;;
    replica) printf '%s\n' "$REPLICA_PORT" ;;
    *) die "unknown mariadb instance '$1'" ;;
  esac
}
mdb_home() { printf '%s\n' "$MDB_DIR/$1"; }
mdb_cnf() { printf '%s\n' "$MDB_DIR/$1/my.cnf"; }
mdb_pidfile() { printf '%s\n' "$MDB_DIR/$1/mariadbd.pid"; }
mdb_log() { printf '%s\n' "$MDB_DIR/$1/mariadbd.log"; }
mdb_marker() { printf '%s\n' "$MDB_DIR/$1/.initialized"; }

# Unix socket paths are limited to ~107 bytes; fall back to /tmp for deep checkouts.
mdb_sock() {
  local sock="$MDB_DIR/$1/mariadbd.sock" sum
  if ((${#sock} > 100)); then
    sum=$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)
    sock="/tmp/ballast-topology-$sum/$1.sock"
  fi
  printf '%s\n' "$sock"
}

# Client helpers. --no-defaults keeps /etc/mysql/my.cnf (which points at the shared
# 3306 server's socket) out of the picture; the explicit socket selects our server.
mdb_cli() {
  local inst=$1
  shift
  "$MARIADB" --no-defaults --protocol=socket -S "$(mdb_sock "$inst")" -uroot \
    --connect-timeout=2 "$@"
}
mdb_query() { mdb_cli "$1" -N -B -e "$2"; }

mdb_pid() {
  local pidfile pid needle
  pidfile=$(mdb_pidfile "$1")
  needle="--defaults-file=$(mdb_cnf "$1")"
  if [[ -f "$pidfile" ]] && pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null) && pid_matches "$pid" "$needle"; then
    return 0
  fi
  pid_by_cmdline "$needle" mariadbd
}

mdb_write_cnf() {
  local inst=$1 port server_id home extra tmp
  port=$(mdb_port "$inst")
  home=$(mdb_home "$inst")
  if [[ $inst == primary ]]; then
    server_id=1
    extra="read_only                      = OFF
rpl_semi_sync_master_enabled   = ON
rpl_semi_sync_master_timeout   = $SEMI_SYNC_TIMEOUT_MS"
  else
    server_id=2
    extra="read_only                      = ON
relay_log                      = relay-bin
relay_log_recovery             = ON
slave_net_timeout              = 10
rpl_semi_sync_slave_enabled    = ON"
  fi
  mkdir -p "$home"
  tmp="$(mdb_cnf "$inst").tmp"
  cat >"$tmp" <<EOF
# Generated by scripts/topology.sh -- edits are overwritten on every start.
[mysqld]
user                           = root
port                           = $port
bind-address                   = 127.0.0.1
skip-name-resolve
socket                         = $(mdb_sock "$inst")
pid-file                       = $(mdb_pidfile "$inst")
datadir                        = $home/data
# Its own tmpdir: a starting mariadbd deletes every #sql* file in its tmpdir, which would pull
# temporary tables from under another server sharing /tmp (the standard 3306 one, a test's).
tmpdir                         = $home/tmp
log-error                      = $(mdb_log "$inst")
server_id                      = $server_id
log_bin                        = mariadb-bin
binlog_format                  = ROW
binlog_expire_logs_seconds     = 0
gtid_strict_mode               = ON
log_slave_updates              = ON
$extra
session_track_system_variables = autocommit,character_set_client,character_set_connection,character_set_results,time_zone,last_gtid
character-set-server           = utf8mb4
collation-server               = utf8mb4_general_ci
max_connections                = 200
table_open_cache               = 400
# Small footprint: a 2-core box shared with other servers; this is test data.
innodb_buffer_pool_size        = 32M
innodb_log_file_size           = 16M
innodb_log_buffer_size         = 4M
innodb_flush_log_at_trx_commit = 2
sync_binlog                    = 0
key_buffer_size                = 1M
aria_pagecache_buffer_size     = 8M
query_cache_size               = 0
performance_schema             = OFF

[client]
port                           = $port
socket                         = $(mdb_sock "$inst")
user                           = root
EOF
  mv -f "$tmp" "$(mdb_cnf "$inst")"
}

# Users and the `test` database, identical on both servers and kept out of the
# binlog (sql_log_bin=0): the primary's binlog then holds only what clients write, so
# a fresh replica can replay it from the very beginning without duplicate objects.
mdb_bootstrap_sql() {
  local host drop_host=""
  host=$(hostname 2>/dev/null || true)
  case $host in
    '' | localhost | 127.0.0.1 | ::1 | %) ;;
    *) drop_host="DROP USER IF EXISTS 'root'@'$host';" ;;
  esac
  cat <<EOF
SET SESSION sql_log_bin = 0;
$drop_host
DROP USER IF EXISTS ''@'localhost';
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS '$REPL_USER'@'%' IDENTIFIED BY '$REPL_PASSWORD';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '$REPL_USER'@'%';
CREATE DATABASE IF NOT EXISTS test;
FLUSH PRIVILEGES;
EOF
}

mdb_wait_ready() {
  local inst=$1 pid=$2 port deadline=$((SECONDS + MDB_READY_TIMEOUT))
  port=$(mdb_port "$inst")
  until mdb_query "$inst" 'SELECT 1' >/dev/null 2>&1; do
    if ! proc_alive "$pid"; then
      show_log_tail "$(mdb_log "$inst")"
      die "mariadb $inst (127.0.0.1:$port) exited during startup; see $(mdb_log "$inst")"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$(mdb_log "$inst")"
      die "mariadb $inst (127.0.0.1:$port) not accepting connections after ${MDB_READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
}

mdb_stop_one() {
  local inst=$1 pid port
  port=$(mdb_port "$inst")
  if pid=$(mdb_pid "$inst"); then
    log "stopping mariadb $inst 127.0.0.1:$port (pid $pid)"
    # SIGTERM is mariadbd's normal (clean) shutdown; unlike `mariadb-admin shutdown` it
    # does not sleep in whole seconds while polling, so wait_gone's 0.1s poll decides.
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" "mariadb $inst"
  else
    log "mariadb $inst 127.0.0.1:$port already stopped"
  fi
  rm -f "$(mdb_pidfile "$inst")" "$(mdb_sock "$inst")" "$(mdb_sock "$inst").lock"
}

mdb_wipe() {
  local inst=$1
  mdb_stop_one "$inst" >/dev/null
  rm -rf "$(mdb_home "$inst")"
}

# Start one server (initialising its datadir if needed). Sets MDB_FRESH=1 when the
# datadir was created by this call.
mdb_start_one() {
  local inst=$1 port home pid sock
  port=$(mdb_port "$inst")
  home=$(mdb_home "$inst")
  sock=$(mdb_sock "$inst")
  MDB_FRESH=0

  if pid=$(mdb_pid "$inst"); then
    if [[ -f "$(mdb_marker "$inst")" ]]; then
      mdb_wait_ready "$inst" "$pid"
      log "mariadb $inst 127.0.0.1:$port already running (pid $pid)"
      return 0
    fi
    warn "mariadb $inst is running but its setup never finished; re-initialising"
    mdb_wipe "$inst"
  fi

  # Not running: whatever pid/socket files are left are stale (e.g. after a reboot).
  rm -f "$(mdb_pidfile "$inst")" "$sock" "$sock.lock"
  if port_listening "$port"; then
    die "port 127.0.0.1:$port is in use by another process; cannot start mariadb $inst"
  fi

  mkdir -p "$home" "$home/tmp" "$(dirname "$sock")"
  mdb_write_cnf "$inst"

  if [[ ! -f "$(mdb_marker "$inst")" ]]; then
    log "initialising mariadb $inst datadir"
    rm -rf "$home/data"
    mkdir -p "$home/data"
    if ! "$MARIADB_INSTALL_DB" --defaults-file="$(mdb_cnf "$inst")" \
      --auth-root-authentication-method=normal --skip-test-db \
      >"$home/install-db.log" 2>&1 9>&-; then
      show_log_tail "$home/install-db.log"
      die "mariadb-install-db failed for $inst; see $home/install-db.log"
    fi
    MDB_FRESH=1
  fi

  log "starting mariadb $inst on 127.0.0.1:$port"
  # 9>&-: the daemon must not inherit (and so hold forever) the lock file descriptor.
  setsid "$MARIADBD" --defaults-file="$(mdb_cnf "$inst")" </dev/null >>"$(mdb_log "$inst")" 2>&1 9>&- &
  pid=$!
  mdb_wait_ready "$inst" "$pid"

  if ((MDB_FRESH)); then
    mdb_bootstrap_sql | mdb_cli "$inst" ||
      die "bootstrap SQL (users, database test) failed on mariadb $inst"
    touch "$(mdb_marker "$inst")"
  fi
  log "mariadb $inst 127.0.0.1:$port up (pid $(mdb_pid "$inst" || echo "$pid"))"
}

# Field $2 from SHOW SLAVE STATUS on the replica (empty if not configured).
slave_field() {
  printf '%s\n' "$1" | awk -v f="$2" '{ i = index($0, ": "); if (i == 0) next; k = substr($0, 1, i - 1); sub(/^ +/, "", k) } k == f { print substr($0, i + 2); exit }'
}
slave_status() { mdb_cli replica -e 'SHOW SLAVE STATUS\G' 2>/dev/null || true; }

# Point a freshly initialised replica at the primary, from the start of its binlog.
mdb_configure_replica() {
  log "configuring replication 127.0.0.1:$REPLICA_PORT <- 127.0.0.1:$PRIMARY_PORT (GTID slave_pos)"
  mdb_cli replica <<EOF || die "CHANGE MASTER on the replica failed"
STOP SLAVE;
SET GLOBAL gtid_slave_pos = '';
CHANGE MASTER TO
  MASTER_HOST = '127.0.0.1',
  MASTER_PORT = $PRIMARY_PORT,
  MASTER_USER = '$REPL_USER',
  MASTER_PASSWORD = '$REPL_PASSWORD',
  MASTER_USE_GTID = slave_pos,
  MASTER_CONNECT_RETRY = 1;
START SLAVE;
EOF
}

# Ensure both replication threads run and the replica has caught up with the primary.
# Returns 1 (with REPL_ERROR set) when replication is broken.
mdb_check_replication() {
  local st io sql deadline=$((SECONDS + REPL_TIMEOUT)) started=0 pos waited
  REPL_ERROR=""
  while :; do
    st=$(slave_status)
    if [[ -z "$st" ]]; then
      REPL_ERROR="replication is not configured on the replica"
      return 1
    fi
    io=$(slave_field "$st" Slave_IO_Running)
    sql=$(slave_field "$st" Slave_SQL_Running)
    if [[ $io == Yes && $sql == Yes ]]; then
      break
    fi
    if [[ -n "$(slave_field "$st" Last_SQL_Error)" && $sql != Yes ]]; then
      REPL_ERROR="SQL thread stopped: $(slave_field "$st" Last_SQL_Error)"
      return 1
    fi
    if ((!started)) && [[ $io == No || $sql == No ]]; then
      mdb_query replica 'START SLAVE' >/dev/null 2>&1 || true
      started=1
    fi
    if ((SECONDS >= deadline)); then
      REPL_ERROR="threads not running after ${REPL_TIMEOUT}s (IO=$io SQL=$sql): $(slave_field "$st" Last_IO_Error)$(slave_field "$st" Last_SQL_Error)"
      return 1
    fi
    sleep 0.2
  done
  pos=$(mdb_query primary 'SELECT @@GLOBAL.gtid_binlog_pos')
  if [[ -n "$pos" ]]; then
    waited=$(mdb_query replica "SELECT MASTER_GTID_WAIT('$pos', $REPL_TIMEOUT)")
    if [[ $waited != 0 ]]; then
      REPL_ERROR="replica did not reach primary position $pos within ${REPL_TIMEOUT}s"
      return 1
    fi
  fi
  return 0
}

# Semi-synchronous replication on both servers (the my.cnf has it; servers started before it
# did get it here, and the replica's IO thread reconnects to register as a semi-sync slave).
# Bounded: without the replica's registration the primary falls back to async, and says so.
mdb_semi_sync() {
  local deadline=$((SECONDS + REPL_TIMEOUT)) clients
  mdb_query primary "SET GLOBAL rpl_semi_sync_master_timeout = $SEMI_SYNC_TIMEOUT_MS; SET GLOBAL rpl_semi_sync_master_enabled = ON" ||
    die "could not turn semi-sync on on the primary"
  if [[ "$(mdb_query replica 'SELECT @@GLOBAL.rpl_semi_sync_slave_enabled')" != 1 ]]; then
    log "turning semi-sync on on the replica (its IO thread reconnects)"
    mdb_query replica 'SET GLOBAL rpl_semi_sync_slave_enabled = ON; STOP SLAVE IO_THREAD; START SLAVE IO_THREAD' ||
      die "could not turn semi-sync on on the replica"
  fi
  until clients=$(mdb_semi_sync_field primary Rpl_semi_sync_master_clients) && ((clients >= 1)); do
    if ((SECONDS >= deadline)); then
      warn "semi-sync: the primary has no semi-sync replica after ${REPL_TIMEOUT}s; commits are asynchronous"
      return 0
    fi
    sleep 0.2
  done
}

# A semi-sync status variable of instance $1 (empty if unreadable).
mdb_semi_sync_field() {
  mdb_query "$1" "SHOW GLOBAL STATUS LIKE '$2'" 2>/dev/null | awk '{ print $2 }'
}

mariadb_start() {
  local fresh_primary pos
  mdb_start_one primary
  fresh_primary=$MDB_FRESH
  if ((fresh_primary)) && [[ -e "$(mdb_home replica)" ]]; then
    log "primary was (re)initialised; re-creating the replica to match"
    mdb_wipe replica
  fi
  mdb_start_one replica
  if ((MDB_FRESH)); then
    mdb_configure_replica
  fi
  if ! mdb_check_replication; then
    warn "replication broken ($REPL_ERROR); rebuilding the replica from the primary's binlog"
    mdb_wipe replica
    mdb_start_one replica
    mdb_configure_replica
    mdb_check_replication || die "replication still broken after rebuilding the replica: $REPL_ERROR"
  fi
  mdb_semi_sync
  pos=$(mdb_query replica 'SELECT @@GLOBAL.gtid_slave_pos')
  log "mariadb replication running, replica caught up (gtid_slave_pos=${pos:-<empty>}), semi-sync $(mdb_semi_sync_field primary Rpl_semi_sync_master_status) (timeout ${SEMI_SYNC_TIMEOUT_MS} ms)"
}

mariadb_stop() {
  mdb_stop_one replica
  mdb_stop_one primary
}

# Prints status lines; returns 1 if anything is down or unhealthy.
mariadb_status() {
  local ok=0 pid st io sql lag err
  if pid=$(mdb_pid primary) && mdb_query primary 'SELECT 1' >/dev/null 2>&1; then
    log "mariadb primary 127.0.0.1:$PRIMARY_PORT up (pid $pid) gtid_binlog_pos=$(mdb_query primary 'SELECT @@GLOBAL.gtid_binlog_pos')"
    log "mariadb primary semi-sync: Rpl_semi_sync_master_status=$(mdb_semi_sync_field primary Rpl_semi_sync_master_status) clients=$(mdb_semi_sync_field primary Rpl_semi_sync_master_clients) timeout=$(mdb_query primary 'SELECT @@GLOBAL.rpl_semi_sync_master_timeout') ms acknowledged=$(mdb_semi_sync_field primary Rpl_semi_sync_master_yes_tx) not_acknowledged=$(mdb_semi_sync_field primary Rpl_semi_sync_master_no_tx)"
  else
    log "mariadb primary 127.0.0.1:$PRIMARY_PORT DOWN"
    ok=1
  fi
  if pid=$(mdb_pid replica) && mdb_query replica 'SELECT 1' >/dev/null 2>&1; then
    st=$(slave_status)
    io=$(slave_field "$st" Slave_IO_Running)
    sql=$(slave_field "$st" Slave_SQL_Running)
    lag=$(slave_field "$st" Seconds_Behind_Master)
    log "mariadb replica 127.0.0.1:$REPLICA_PORT up (pid $pid) Slave_IO_Running=${io:-n/a} Slave_SQL_Running=${sql:-n/a} Seconds_Behind_Master=${lag:-n/a}"
    log "mariadb replica gtid_slave_pos=$(mdb_query replica 'SELECT @@GLOBAL.gtid_slave_pos') Gtid_IO_Pos=$(slave_field "$st" Gtid_IO_Pos) Rpl_semi_sync_slave_status=$(mdb_semi_sync_field replica Rpl_semi_sync_slave_status)"
    err="$(slave_field "$st" Last_IO_Error)$(slave_field "$st" Last_SQL_Error)"
    [[ -z "$err" ]] || log "mariadb replica last error: $err"
    [[ $io == Yes && $sql == Yes ]] || ok=1
  else
    log "mariadb replica 127.0.0.1:$REPLICA_PORT DOWN"
    ok=1
  fi
  return "$ok"
}

# ----------------------------------------------------------------------------- redis

rc_dir() { printf '%s\n' "$RC_DIR/$1"; }
rc_cli() {
  local port=$1
  shift
  "$REDIS_CLI" -h 127.0.0.1 -p "$port" "$@"
}
rc_ping() { [[ "$(rc_cli "$1" ping 2>/dev/null)" == PONG ]]; }

rc_pid() {
  local pidfile pid
  pidfile="$(rc_dir "$1")/redis.pid"
  if [[ -f "$pidfile" ]] && pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null) && pid_matches "$pid" ":$1"; then
    return 0
  fi
  pid_by_cmdline "127.0.0.1:$1 " redis-server
}

# Field $2 of CLUSTER INFO on node $1.
rc_cluster_field() {
  rc_cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

rc_start_node() {
  local port=$1 dir pid deadline
  dir=$(rc_dir "$port")
  if pid=$(rc_pid "$port") && rc_ping "$port"; then
    return 0
  fi
  rm -f "$dir/redis.pid"
  if port_listening "$port"; then
    die "port 127.0.0.1:$port is in use by another process; cannot start redis node"
  fi
  mkdir -p "$dir"
  if ! "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 \
    --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
    --cluster-node-timeout 2000 \
    --save "" --appendonly no --repl-diskless-sync-delay 0 \
    --daemonize yes --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" \
    >"$dir/redis-server.out" 2>&1 9>&-; then
    show_log_tail "$dir/redis-server.out"
    show_log_tail "$dir/redis.log"
    die "redis-server on 127.0.0.1:$port failed to start"
  fi
  deadline=$((SECONDS + REDIS_READY_TIMEOUT))
  until rc_ping "$port"; do
    if ((SECONDS >= deadline)); then
      show_log_tail "$dir/redis.log"
      die "redis node 127.0.0.1:$port not answering PING after ${REDIS_READY_TIMEOUT}s"
    fi
    sleep 0.1
  done
  STARTED_NODES+=("$port")
}

rc_stop_node() {
  local port=$1 pid
  if pid=$(rc_pid "$port"); then
    rc_cli "$port" shutdown nosave now >/dev/null 2>&1 ||
      rc_cli "$port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    printf '%s\n' "$pid"
  fi
}

redis_stop() {
  local port pid pids=() stopped=()
  for port in "${REDIS_PORTS[@]}"; do
    if pid=$(rc_stop_node "$port") && [[ -n "$pid" ]]; then
      pids+=("$pid")
      stopped+=("$port")
    fi
  done
  for pid in "${pids[@]}"; do
    wait_gone "$pid" "redis node pid $pid"
  done
  for port in "${REDIS_PORTS[@]}"; do
    rm -f "$(rc_dir "$port")/redis.pid"
  done
  if ((${#stopped[@]})); then
    log "stopped redis nodes ${stopped[*]}"
  else
    log "redis cluster already stopped"
  fi
}

# 0 when every node has never joined a cluster (no slots, knows only itself).
rc_all_fresh() {
  local port
  for port in "${REDIS_PORTS[@]}"; do
    [[ "$(rc_cluster_field "$port" cluster_known_nodes)" == 1 ]] || return 1
    [[ "$(rc_cluster_field "$port" cluster_slots_assigned)" == 0 ]] || return 1
  done
}

# 0 when at least one node has never joined a cluster (its nodes.conf was lost).
rc_any_fresh() {
  local port
  for port in "${REDIS_PORTS[@]}"; do
    if [[ "$(rc_cluster_field "$port" cluster_known_nodes)" == 1 &&
      "$(rc_cluster_field "$port" cluster_slots_assigned)" == 0 ]]; then
      return 0
    fi
  done
  return 1
}

# 0 when every node sees a complete, ok cluster of all nodes and every replica's link
# to its master is up.
rc_healthy() {
  local port n=${#REDIS_PORTS[@]} info
  for port in "${REDIS_PORTS[@]}"; do
    info=$(rc_cli "$port" cluster info 2>/dev/null | tr -d '\r') || return 1
    [[ $info == *"cluster_state:ok"* ]] || return 1
    [[ $info == *"cluster_known_nodes:$n"* ]] || return 1
    [[ $info == *"cluster_slots_assigned:16384"* ]] || return 1
    info=$(rc_cli "$port" info replication 2>/dev/null | tr -d '\r') || return 1
    if [[ $info == *"role:slave"* && $info != *"master_link_status:up"* ]]; then
      return 1
    fi
  done
}

rc_wait_healthy() {
  local deadline=$((SECONDS + $1))
  until rc_healthy; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  return 0
}

rc_create() {
  local port nodes=()
  for port in "${REDIS_PORTS[@]}"; do
    nodes+=("127.0.0.1:$port")
  done
  log "creating redis cluster (3 masters + 3 replicas)"
  if ! "$REDIS_CLI" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
    >"$RC_DIR/cluster-create.log" 2>&1; then
    show_log_tail "$RC_DIR/cluster-create.log"
    die "redis-cli --cluster create failed; see $RC_DIR/cluster-create.log"
  fi
}

redis_start_nodes() {
  local port
  STARTED_NODES=()
  for port in "${REDIS_PORTS[@]}"; do
    rc_start_node "$port"
  done
  if ((${#STARTED_NODES[@]})); then
    log "started redis nodes ${STARTED_NODES[*]}"
  fi
}

redis_start() {
  mkdir -p "$RC_DIR"
  redis_start_nodes
  if rc_all_fresh; then
    rc_create
  elif ((${#STARTED_NODES[@]} == 0)) && rc_healthy; then
    log "redis cluster 127.0.0.1:${REDIS_PORTS[0]}-${REDIS_PORTS[-1]} already running, cluster_state:ok"
    return 0
  elif rc_any_fresh || ! rc_wait_healthy "$CLUSTER_TIMEOUT"; then
    warn "redis cluster state is inconsistent or not ok within ${CLUSTER_TIMEOUT}s; wiping and re-creating it (test data only)"
    redis_stop >/dev/null
    rm -rf "$RC_DIR"
    mkdir -p "$RC_DIR"
    redis_start_nodes
    rc_create
  fi
  if ! rc_wait_healthy "$CLUSTER_TIMEOUT"; then
    rc_cli "${REDIS_PORTS[0]}" cluster info >&2 || true
    die "redis cluster not healthy (cluster_state:ok on all ${#REDIS_PORTS[@]} nodes) after ${CLUSTER_TIMEOUT}s"
  fi
  log "redis cluster 127.0.0.1:${REDIS_PORTS[0]}-${REDIS_PORTS[-1]} up, cluster_state:ok"
}

redis_status() {
  local ok=0 port pid role up=()
  for port in "${REDIS_PORTS[@]}"; do
    if pid=$(rc_pid "$port") && rc_ping "$port"; then
      role=$(rc_cli "$port" info replication 2>/dev/null | tr -d '\r' | sed -n 's/^role://p')
      log "redis 127.0.0.1:$port up (pid $pid) role=$role"
      up+=("$port")
    else
      log "redis 127.0.0.1:$port DOWN"
      ok=1
    fi
  done
  if ((${#up[@]})); then
    log "redis cluster (via ${up[0]}): cluster_state:$(rc_cluster_field "${up[0]}" cluster_state) known_nodes=$(rc_cluster_field "${up[0]}" cluster_known_nodes) slots_assigned=$(rc_cluster_field "${up[0]}" cluster_slots_assigned)"
    [[ "$(rc_cluster_field "${up[0]}" cluster_state)" == ok ]] || ok=1
  else
    log "redis cluster: cluster_state:down"
  fi
  return "$ok"
}

# ----------------------------------------------------------------------------- rabbitmq
#
# Three nodes from the machine's own rabbitmq-server, beside the standard rabbit@localhost.
# Every server and CLI call runs with the node's own environment (rmq_env): /etc/rabbitmq's
# env file and config name the standard node and bind 5672, so both are overridden; HOME is a
# private one holding the shared Erlang cookie (Erlang would write a random one to the real
# HOME before --erlang-cookie applies); the CLIs come from /usr/lib/rabbitmq/bin (the
# /usr/sbin wrappers switch to the rabbitmq user). Settings tried on this machine:
# ../shared/research/rabbitmq-cluster.md.

rmq_node() { printf 'ballast%s@localhost\n' "$1"; }
rmq_port() { printf '%s\n' "$((RMQ_AMQP_BASE + $1))"; }
rmq_home() { printf '%s\n' "$RMQ_DIR/n$1"; }

# Run "${@:2}" with node $1's environment.
rmq_env() {
  local n=$1 d
  shift
  d=$(rmq_home "$n")
  env HOME="$RMQ_DIR/home" \
    RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf" \
    RABBITMQ_NODENAME="$(rmq_node "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(rmq_port "$n")" \
    RABBITMQ_DIST_PORT="$((RMQ_DIST_BASE + n))" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_PID_FILE="$d/node.pid" \
    ERL_CRASH_DUMP="$d/erl_crash.dump" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_FLAGS="" \
    PATH="$RMQ_BIN:$PATH" \
    "$@"
}

rmq_ctl() {
  local n=$1
  shift
  rmq_env "$n" rabbitmqctl -n "$(rmq_node "$n")" "$@"
}

rmq_pid() {
  local pidfile pid
  pidfile="$(rmq_home "$1")/node.pid"
  [[ -f "$pidfile" ]] || return 1
  pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null) || return 1
  # the node name is not on a 3.10 node's command line, only in its environment
  pid_matches "$pid" "$RMQ_DIR/home" >/dev/null || return 1
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(rmq_node "$1")" || return 1
  printf '%s\n' "$pid"
}

# 0 when node $1 runs and its app is up.
rmq_up() { rmq_ctl "$1" -q await_startup --timeout 2 >/dev/null 2>&1; }

rmq_prepare() {
  local n d
  mkdir -p "$RMQ_DIR/home"
  : >"$RMQ_DIR/rabbitmq-env.conf"
  if [[ ! -f "$RMQ_DIR/home/.erlang.cookie" ]]; then
    # one cookie for the three nodes and their CLIs; Erlang refuses a cookie others can read
    printf 'BALLASTTOPOLOGY%s' "$(od -An -N12 -tx1 /dev/urandom | tr -dc '0-9a-f' | tr 'a-f' 'A-F')" \
      >"$RMQ_DIR/home/.erlang.cookie"
    chmod 400 "$RMQ_DIR/home/.erlang.cookie"
  fi
  for n in "${RMQ_NODES[@]}"; do
    d=$(rmq_home "$n")
    mkdir -p "$d/log"
    printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users.guest = true\nlog.console = false\nlog.file.level = info\n' \
      "$(rmq_port "$n")" >"$d/rabbitmq.conf"
    printf '[].\n' >"$d/advanced.config"
    printf '[].\n' >"$d/enabled_plugins"
  done
}

# Launch node $1 (detached, its own session) unless it already runs; does not wait.
rmq_launch() {
  local n=$1 d
  d=$(rmq_home "$n")
  if rmq_pid "$n" >/dev/null; then return 0; fi
  rm -f "$d/node.pid"
  if port_listening "$(rmq_port "$n")"; then
    die "port 127.0.0.1:$(rmq_port "$n") is in use by another process; cannot start $(rmq_node "$n")"
  fi
  # the subshell's own descriptors go to the log too: the shell that runs rmq_env stays as the
  # server's parent, and must not hold the caller's stdout (a pipe would never see its end)
  (cd "$d" && exec >"$d/stdout.log" 2>&1 </dev/null 9>&- && rmq_env "$n" setsid nohup rabbitmq-server &)
  RMQ_STARTED+=("$n")
}

rmq_wait() {
  local n=$1 d deadline=$((SECONDS + RMQ_READY_TIMEOUT))
  d=$(rmq_home "$n")
  until [[ -s "$d/node.pid" ]]; do
    if ((SECONDS >= deadline)); then
      show_log_tail "$d/stdout.log"
      die "$(rmq_node "$n") wrote no pid file within ${RMQ_READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
  if ! rmq_ctl "$n" -q wait "$d/node.pid" --timeout "$RMQ_READY_TIMEOUT" >/dev/null 2>&1; then
    show_log_tail "$d/stdout.log"
    die "$(rmq_node "$n") did not boot within ${RMQ_READY_TIMEOUT}s; see $d/log"
  fi
}

# The nodes node $1 sees running in its cluster, one per line.
rmq_running_nodes() {
  rmq_ctl "$1" -q cluster_status --formatter json 2>/dev/null |
    sed -n 's/.*"running_nodes":\[\([^]]*\)\].*/\1/p' | tr -d '"' | tr ',' '\n'
}

rmq_clustered() {
  local n
  for n in "${RMQ_NODES[@]}"; do
    [[ "$(rmq_running_nodes "$n" | grep -c '^ballast[0-9]*@localhost$')" == "${#RMQ_NODES[@]}" ]] || return 1
  done
}

rmq_join() {
  local n=$1 first
  first=$(rmq_node "${RMQ_NODES[0]}")
  if rmq_running_nodes "$n" | grep -qx "$first"; then return 0; fi
  log "joining $(rmq_node "$n") to $first"
  {
    rmq_ctl "$n" stop_app &&
      rmq_ctl "$n" join_cluster "$first" &&
      rmq_ctl "$n" start_app
  } >"$(rmq_home "$n")/join.log" 2>&1 || {
    show_log_tail "$(rmq_home "$n")/join.log"
    return 1
  }
}

rabbitmq_start() {
  local n deadline
  RMQ_STARTED=()
  rmq_prepare
  for n in "${RMQ_NODES[@]}"; do rmq_launch "$n"; done
  for n in "${RMQ_NODES[@]}"; do rmq_wait "$n"; done
  if ((${#RMQ_STARTED[@]})); then log "started rabbitmq nodes ${RMQ_STARTED[*]/#/ballast}"; fi
  for n in "${RMQ_NODES[@]:1}"; do
    if ! rmq_join "$n"; then
      warn "$(rmq_node "$n") could not join; resetting it (test data only) and joining again"
      rmq_ctl "$n" stop_app >/dev/null 2>&1 || true
      rmq_ctl "$n" force_reset >/dev/null 2>&1 || true
      rmq_ctl "$n" start_app >/dev/null 2>&1 || true
      rmq_join "$n" || die "$(rmq_node "$n") could not join the cluster; see $(rmq_home "$n")/log"
    fi
  done
  deadline=$((SECONDS + CLUSTER_TIMEOUT))
  until rmq_clustered; do
    ((SECONDS < deadline)) || die "rabbitmq cluster: not every node sees the other two after ${CLUSTER_TIMEOUT}s"
    sleep 0.5
  done
  log "rabbitmq cluster 127.0.0.1:$(rmq_port 1)-$(rmq_port "${RMQ_NODES[-1]}") up, ${#RMQ_NODES[@]} nodes running"
}

rabbitmq_stop() {
  local n pid waits=() stopped=()
  for n in "${RMQ_NODES[@]}"; do
    if rmq_pid "$n" >/dev/null; then
      # with the pid file, stop returns once the process has exited; the three in parallel
      rmq_ctl "$n" stop "$(rmq_home "$n")/node.pid" >/dev/null 2>&1 &
      waits+=("$!")
      stopped+=("$n")
    fi
  done
  for pid in "${waits[@]}"; do wait "$pid" || true; done
  for n in "${stopped[@]}"; do
    if pid=$(rmq_pid "$n"); then wait_gone "$pid" "$(rmq_node "$n")"; fi
    rm -f "$(rmq_home "$n")/node.pid"
  done
  if ((${#stopped[@]})); then
    log "stopped rabbitmq nodes ${stopped[*]/#/ballast}"
  else
    log "rabbitmq cluster already stopped"
  fi
}

rabbitmq_status() {
  local ok=0 n pid
  for n in "${RMQ_NODES[@]}"; do
    if pid=$(rmq_pid "$n") && rmq_up "$n"; then
      log "rabbitmq $(rmq_node "$n") 127.0.0.1:$(rmq_port "$n") up (pid $pid), sees: $(rmq_running_nodes "$n" | tr '\n' ' ')"
    else
      log "rabbitmq $(rmq_node "$n") 127.0.0.1:$(rmq_port "$n") DOWN"
      ok=1
    fi
  done
  if ((ok == 0)) && ! rmq_clustered; then ok=1; fi
  return "$ok"
}

# ----------------------------------------------------------------------------- main

usage() {
  cat >&2 <<EOF
usage: $0 start|stop|restart|status [mariadb|redis-cluster|rabbitmq-cluster]...
  start    start (and on first use create) the topology; idempotent
  stop     stop the selected servers (data in .topology/ is kept)
  restart  stop, then start
  status   show each server up/down, replication and cluster state
           (exit 0 when everything selected is up and healthy, 3 otherwise)
default component: all (mariadb, redis-cluster and rabbitmq-cluster)
EOF
  exit 2
}

resolve_bins() {
  local want=$1
  if [[ $want == *mariadb* ]]; then
    MARIADBD=$(need_bin mariadbd mariadb-server)
    MARIADB_INSTALL_DB=$(need_bin mariadb-install-db mariadb-server)
    MARIADB=$(need_bin mariadb mariadb-client)
  fi
  if [[ $want == *redis* ]]; then
    REDIS_SERVER=$(need_bin redis-server redis-server)
    REDIS_CLI=$(need_bin redis-cli redis-tools)
  fi
  if [[ $want == *rabbitmq* ]]; then
    RMQ_BIN=/usr/lib/rabbitmq/bin
    [[ -x $RMQ_BIN/rabbitmq-server ]] || die "required $RMQ_BIN/rabbitmq-server not found (install it, e.g. apt-get install rabbitmq-server)"
  fi
}

main() {
  local cmd=${1:-} comp want="" rc=0 t0=$SECONDS
  [[ -n "$cmd" ]] || usage
  shift
  if (($# == 0)); then
    want="mariadb redis rabbitmq"
  fi
  for comp in "$@"; do
    case $comp in
      all) want="mariadb redis rabbitmq" ;;
      mariadb | mysql) want="$want mariadb" ;;
      redis-cluster | redis) want="$want redis" ;;
      rabbitmq-cluster | rabbitmq) want="$want rabbitmq" ;;
      *)
        printf 'topology: ERROR: unknown component %s\n' "$comp" >&2
        usage
        ;;
    esac
  done
  resolve_bins "$want"

  case $cmd in
    start)
      take_lock
      if [[ $want == *mariadb* ]]; then mariadb_start; fi
      if [[ $want == *redis* ]]; then redis_start; fi
      if [[ $want == *rabbitmq* ]]; then rabbitmq_start; fi
      log "started in $((SECONDS - t0))s"
      ;;
    stop)
      take_lock
      if [[ $want == *rabbitmq* ]]; then rabbitmq_stop; fi
      if [[ $want == *redis* ]]; then redis_stop; fi
      if [[ $want == *mariadb* ]]; then mariadb_stop; fi
      ;;
    restart)
      take_lock
      if [[ $want == *rabbitmq* ]]; then rabbitmq_stop; fi
      if [[ $want == *redis* ]]; then redis_stop; fi
      if [[ $want == *mariadb* ]]; then mariadb_stop; fi
      if [[ $want == *mariadb* ]]; then mariadb_start; fi
      if [[ $want == *redis* ]]; then redis_start; fi
      if [[ $want == *rabbitmq* ]]; then rabbitmq_start; fi
      ;;
    status)
      if [[ $want == *mariadb* ]]; then mariadb_status || rc=3; fi
      if [[ $want == *redis* ]]; then redis_status || rc=3; fi
      if [[ $want == *rabbitmq* ]]; then rabbitmq_status || rc=3; fi
      return "$rc"
      ;;
    -h | --help | help) usage ;;
    *)
      printf 'topology: ERROR: unknown command %s\n' "$cmd" >&2
      usage
      ;;
  esac
}

main "$@"
