#!/usr/bin/env bash
# README command 1: installs dependencies, builds, then runs the whole path on a small model:
# a private redis-server, `awqd serve` on the llama-13m fixture (the CPU executor where there is
# no GPU), sample jobs through `awqd submit` and through plain redis-cli XADD, and `awqd status`.
# Everything lives in a temporary directory and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
awqd=$PWD/build/bin/awqd
"$awqd" --version

model=${AWQD_MODEL:-${AWQD_FIXTURES:-$PWD/../shared/fixtures}/llama-13m}
if [[ ! -f "$model/config.json" ]]; then
  echo "quickstart: no model at $model: set AWQD_MODEL=DIR (a Hugging Face model directory) or" >&2
  echo "            AWQD_FIXTURES=DIR (the shared fixtures, which have llama-13m)" >&2
  exit 1
fi

tmp=$(mktemp -d -t awqd-quickstart.XXXXXX)
redis_pid="" daemon_pid=""
cleanup() {
  [[ -n "$daemon_pid" ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  [[ -n "$redis_pid" ]] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp" --save "" --appendonly no \
  --logfile "$tmp/redis.log" --daemonize no &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "quickstart: redis-server on 127.0.0.1:$port"

# The daemon's configuration: every key can also be a flag (--metrics-port ...).
cat >"$tmp/awqd.toml" <<TOML
model = "$model"
redis = "redis://127.0.0.1:$port"
db = "$tmp/awqd.db"
control_socket = "$tmp/awqd.sock"
metrics_port = $(free_port)
device = "auto"
max_num_seqs = 16
TOML
echo "quickstart: config $tmp/awqd.toml:"; sed 's/^/    /' "$tmp/awqd.toml"

"$awqd" serve --config "$tmp/awqd.toml" 2>"$tmp/awqd.log" &
daemon_pid=$!
for _ in $(seq 600); do
  "$awqd" status --config "$tmp/awqd.toml" >/dev/null 2>&1 && break
  kill -0 "$daemon_pid" 2>/dev/null || { echo "quickstart: the daemon exited:" >&2; cat "$tmp/awqd.log" >&2; exit 1; }
  sleep 0.2
done
echo "quickstart: awqd serve is up (log: $tmp/awqd.log)"

echo; echo "== awqd submit --file scripts/sample-jobs.jsonl --batch quickstart --wait"
"$awqd" submit --config "$tmp/awqd.toml" --file scripts/sample-jobs.jsonl --batch quickstart --wait

echo; echo "== a job put on the stream with plain redis-cli, and its result"
redis-cli -p "$port" XADD awqd:jobs '*' job '{"id": "from-redis-cli", "prompt": "Once upon a time", "params": {"max_tokens": 16}}'
for _ in $(seq 100); do
  [[ -n "$(redis-cli -p "$port" GET awqd:result:from-redis-cli)" ]] && break
  sleep 0.1
done
redis-cli -p "$port" GET awqd:result:from-redis-cli

echo; echo "== awqd status"
"$awqd" status --config "$tmp/awqd.toml"
echo; echo "== awqd status --batch quickstart"
"$awqd" status --config "$tmp/awqd.toml" --batch quickstart
echo; echo "== awqd results --batch quickstart (first line)"
"$awqd" results --config "$tmp/awqd.toml" --batch quickstart | head -1

kill -TERM "$daemon_pid"
wait "$daemon_pid" && echo && echo "quickstart: the daemon drained and stopped (exit 0)"
daemon_pid=""
