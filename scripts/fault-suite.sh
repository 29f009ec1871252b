#!/usr/bin/env bash
# The fault suite: builds the service and the driver in release mode, then runs every scenario of
# docs/reliability.md against the real service, PostgreSQL and RabbitMQ on this machine, with load,
# and checks the outcome from the outside. One line per scenario; the last line is
#   faults: <n> scenarios, <n> held, acknowledged=<n> lost=<n> duplicated=<n> redelivered=<n>
# Exit 0 when every scenario held.
#
#   scripts/fault-suite.sh [--quick] [--only NAME,NAME] [--list]
#
# It stops and starts PostgreSQL and RabbitMQ (pg_ctlcluster, rabbitmqctl): run it where nothing
# else needs them for a few minutes. Two runs never overlap (a lock in /tmp). Each scenario uses
# its own database and exchange and removes them at its end; logs stay in fault-out/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,12p' "$0"
  exit 0
fi

echo "fault-suite: building (release)" >&2
cargo build --release --quiet -p approval-ledger -p approval-faults
target_dir=${CARGO_TARGET_DIR:-target}

# The lock is held by flock itself, not handed down (-o): the suite starts PostgreSQL again, and a
# server that inherited the lock's descriptor would hold it for as long as it runs.
exec flock -o /tmp/approval-ledger-disrupt.lock \
  "$target_dir/release/fault-suite" --service "$target_dir/release/approval-ledger" "$@"
