#!/usr/bin/env bash
# README command 2 (and CI's only step): installs dependencies, builds into build/, starts a
# private redis-server for the integration tests (a free port on 127.0.0.1, a temporary
# directory), runs ctest, and stops the server whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh

tmp=$(mktemp -d -t awqd-test.XXXXXX)
redis_pid=""
cleanup() {
  [[ -n "$redis_pid" ]] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp" --save "" --appendonly no \
  --logfile "$tmp/redis.log" --daemonize no &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" ping >/dev/null || { echo "test: redis-server did not start" >&2; cat "$tmp/redis.log"; exit 1; }
export AWQD_TEST_REDIS_URL="redis://127.0.0.1:$port"
echo "test: redis-server on $AWQD_TEST_REDIS_URL"

cd build
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"

# The parsers that take outside input, fuzzed for a minute each (libFuzzer, ASan + UBSan).
cd ..
scripts/fuzz.sh "${AWQD_FUZZ_SECONDS:-60}"
