#!/usr/bin/env bash
# Checks the three standard servers the tests use (Redis 6379, MariaDB 3306, RabbitMQ 5672)
# and, where one does not answer and its binary is installed, starts it with its usual
# command. `status` only reports. Exits non-zero, naming the server, when one stays down.
set -uo pipefail

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
mariadb_up() { mariadb -h 127.0.0.1 -P 3306 -uroot -e 'select 1' >/dev/null 2>&1; }
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

start_redis() {
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
start_mariadb() { start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd; }
start_rabbit() { rabbitmq-server -detached; }

wait_for() { # check seconds
  local i
  for ((i = 0; i < $2 * 2; i++)); do "$1" && return 0; sleep 0.5; done
  return 1
}

mode="${1:-ensure}"
failed=0
for s in "redis:Redis 127.0.0.1:6379:redis-server" \
  "mariadb:MariaDB 127.0.0.1:3306:mariadbd" \
  "rabbit:RabbitMQ 127.0.0.1:5672:rabbitmq-server"; do
  IFS=: read -r key label port bin <<<"$s"
  label="$label:$port"
  case "$key" in
    redis) url="${REDIS_URL:-}" ;; mariadb) url="${MYSQL_URL:-}" ;; rabbit) url="${AMQP_URL:-}" ;;
  esac
  if [ -n "$url" ]; then
    echo "servers: $label not needed: its URL is set in the environment"
    continue
  fi
  if "${key}_up"; then
    echo "servers: $label up"
    continue
  fi
  if [ "$mode" = status ]; then
    echo "servers: $label DOWN"
    failed=1
    continue
  fi
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    echo "servers: $label is down and $bin is not installed: install and start it, or set its URL (see README)" >&2
    failed=1
    continue
  fi
  echo "servers: $label down, starting it"
  "start_${key}" >/dev/null 2>&1 || true
  if wait_for "${key}_up" 60; then
    echo "servers: $label up"
  else
    echo "servers: $label did not come up within 60 s" >&2
    failed=1
  fi
done
exit "$failed"
