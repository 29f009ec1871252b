#!/usr/bin/env bash
# The benchmark, from a clean checkout: builds in release mode, creates a fresh database, starts
# the fake legacy and FCM endpoints and the service (all roles), seeds a data set, runs phase 1
# (open loop at a fixed rate), phase 2 (saturation) and the lists phase (the requesters' own
# lists and searches, GET /v1/requests), stops the service, runs the PostgreSQL
# ceiling (pgbench, bench/ceiling.sql) on the same server at the same concurrency, and prints a
# table ending with the `bench:` line. See docs/benchmarks.md.
#
#   scripts/bench.sh [--duration SECONDS] [--requests N] [--rate N] [--concurrency A,B]
#                    [--ledger PATH] [--no-lists] [--ignore-reader NAME]...
#
# --ledger runs another build of the service (its `approval-ledger` binary) under this checkout's
# load generator and measures, so that an old build and a new one can be alternated in one
# sitting with the same measures: `git worktree add ../old REV && (cd ../old && cargo build
# --release -p approval-ledger)`, then `scripts/bench.sh --ledger ../old/target/release/approval-ledger`.
#
# --no-lists skips the lists phase, for a build from before GET /v1/requests existed (the
# saturation phases are measured the same either way; the lists phase runs after them).
# --ignore-reader NAME: do not wait for that feed reader before the phases (a reader the older
# build does not have, e.g. `--ignore-reader lists --ignore-reader absences` before issues 16-17).
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust), psql and pgbench. RabbitMQ is used
# by the service when it runs a relay. Everything it starts is stopped, and its database dropped,
# when it exits, even on failure. Files of the run are kept in bench-out/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=20
requests=110000
rate=300
concurrency=16,32
ledger_under_test=
lists=1
ignore_readers=()
pg_server=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
while (($#)); do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --ledger) ledger_under_test=$2; shift 2 ;;
    --no-lists) lists=; shift ;;
    --ignore-reader) ignore_readers+=(--ignore-reader "$2"); shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { printf 'bench: %s\n' "$*" >&2; }
out=bench-out/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
db=bench_$(date +%s)_$$
pids=()

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  psql "$pg_server/postgres" -qAtc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  [[ -x ${loadgen:-} && -f ${config:-} ]] && "$loadgen" drop-topology --config "$config" >/dev/null 2>&1 || true
  ((status == 0)) || log "failed (exit $status); logs in $out/"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    if port_free "$p"; then echo "$p"; return; fi
  done
  log "no free port"; return 1
}
step() {  # step COMMAND...: runs it in the background and waits, so a signal stops it at once
  "$@" &
  local pid=$! status=0
  pids+=("$pid")
  wait "$pid" || status=$?
  unset 'pids[-1]'
  return "$status"
}
wait_http() {  # wait_http URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { log "$1 did not answer"; return 1; }
    sleep 0.2
  done
}

log "building (release)"
target_dir=${CARGO_TARGET_DIR:-target}
if [[ -n $ledger_under_test ]]; then
  cargo build --release --quiet -p approval-loadgen
  ledger=$(realpath "$ledger_under_test")
  log "the service under test: $ledger"
else
  cargo build --release --quiet -p approval-ledger -p approval-loadgen
  ledger=$target_dir/release/approval-ledger
fi
loadgen=$target_dir/release/loadgen

api_port=$(free_port)
fake_port=$(free_port)
config=$out/bench.toml
{
  cat <<EOF
# Written by scripts/bench.sh: the service under test.
[app]
environment = "bench"

[http]
bind = "127.0.0.1:$api_port"

[database]
url = "$pg_server/$db"

[broker]
exchange = "bench.$db"

[auth]
jwt_secret = "bench-jwt-secret-$db"

[push]
provider = "fcm"
fcm_endpoint = "http://127.0.0.1:$fake_port"
fcm_project = "bench"
fcm_bearer = "bench-bearer"

[log]
level = "info"
EOF
  for system in erp hr finance travel contracts; do
    cat <<EOF

[systems.$system]
name = "$system (benchmark)"
secret = "$system-bench-secret"
callback_url = "http://127.0.0.1:$fake_port/callbacks/$system"
EOF
  done
} >"$config"

log "database $db: migrations, then seeding $requests requests (as an already published past)"
step "$ledger" --config "$config" migrate 2>"$out/migrate.log"
step "$loadgen" seed --config "$config" --requests "$requests" --no-wait 2> >(tee "$out/seed.log" >&2)

log "fake endpoints on :$fake_port, service on :$api_port"
"$loadgen" fake-endpoints --bind "127.0.0.1:$fake_port" >"$out/fake.log" 2>&1 &
pids+=($!)
"$ledger" --config "$config" serve >"$out/service.log" 2>&1 &
service=$!
pids+=("$service")
wait_http "http://127.0.0.1:$api_port/healthz" 60
wait_http "http://127.0.0.1:$fake_port/_arrivals" 10
log "waiting for the projections and the audit reader to fold the seed"
step "$loadgen" wait --config "$config" "${ignore_readers[@]}" 2> >(tee -a "$out/seed.log" >&2)

log "phase 1 at $rate commands/s, phase 2 at $concurrency in flight, $duration s each"
step "$loadgen" run --config "$config" --base "http://127.0.0.1:$api_port" \
  --fake "http://127.0.0.1:$fake_port" --rate "$rate" --duration "$duration" \
  --concurrency "$concurrency" --service-pid "$service" --out "$out/run.json" >"$out/run.env" 2> >(tee "$out/run.log" >&2)

if [[ -n $lists ]]; then
  log "lists: the seed's requesters read their own lists and search them, $duration s"
  step "$loadgen" lists --config "$config" --base "http://127.0.0.1:$api_port" \
    --duration "$duration" --out "$out/lists.json" 2> >(tee "$out/lists.log" >&2)
fi

# The service's peak resident set over the whole run (VmHWM), and where it ended (VmRSS).
rss_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$service/status")
rss_now_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$service/status")
rss_mb=$(awk -v k="$rss_kb" 'BEGIN {printf "%.0f", k / 1024}')
log "service RSS: peak $((rss_kb / 1024)) MB, now $((rss_now_kb / 1024)) MB"
kill -TERM "$service"
wait "$service" 2>/dev/null || true
running=()
for pid in "${pids[@]}"; do [[ $pid == "$service" ]] || running+=("$pid"); done
pids=("${running[@]}")

best=$(sed -n 's/^BEST_CONCURRENCY=//p' "$out/run.env")
clients=${best:-16}
pg_tps=
if command -v pgbench >/dev/null; then
  ceiling_requests=$(psql "$pg_server/$db" -qAt -f bench/ceiling-setup.sql | tail -n 1)
  # Without TLS on this host, as the service connects to a local server (src/store/db.rs).
  ceiling_url="$pg_server/$db"
  case $pg_server in
    *@127.0.0.1:* | *@localhost:* | *@\[::1\]:*) ceiling_url="$ceiling_url?sslmode=disable" ;;
  esac
  log "PostgreSQL ceiling: pgbench, $clients clients, $duration s, $ceiling_requests requests"
  step pgbench -n -M prepared -f bench/ceiling.sql -c "$clients" -j 2 -T "$duration" \
    -D clients="$clients" -D requests="$ceiling_requests" "$ceiling_url" >"$out/pgbench.log" 2>&1 ||
    { log "pgbench failed: $(tail -n 3 "$out/pgbench.log")"; }
  pg_tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out/pgbench.log" | tail -n 1)
else
  log "pgbench is not installed: pg_ceiling=n/a"
fi

"$loadgen" report --results "$out/run.json" ${pg_tps:+--pg-tps "$pg_tps"} --rss-mb "$rss_mb" \
  ${lists:+--lists "$out/lists.json"} |
  tee "$out/report.txt"
