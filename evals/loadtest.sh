#!/usr/bin/env bash
# One `baton loadtest` run against a fresh release server, as in evals/RESULTS.md ("Load").
# usage: evals/loadtest.sh READING PACE_MS [CUSTOMERS] [MESSAGES]
#   READING: panel (default reading of human-owned conversations) or full (the whole pipeline)
#   env: AGENTS (default 20), SYNC (database.sqlite_synchronous: full or normal), BIN (the binary)
set -u
READING=$1; PACE=$2; CUSTOMERS=${3:-1000}; MESSAGES=${4:-5}
BIN=${BIN:-./target/release/baton}
DATA=$(mktemp -d)
KEY=loadtest-admin-key-$$
# The generator is one address sending as fast as it can: the abuse limits are for other clients.
BATON_ADMIN_KEY=$KEY BATON_LIMITS__REQUESTS_PER_IP_PER_SECOND=0 \
BATON_LIMITS__MESSAGES_PER_CONVERSATION_PER_MINUTE=0 BATON_LIMITS__MAX_CUSTOMER_SOCKETS=0 \
BATON_HANDOFF__HUMAN_OWNED_READING=$READING BATON_DATABASE__SQLITE_SYNCHRONOUS=${SYNC:-full} \
  "$BIN" serve --data "$DATA" --bind 127.0.0.1:8091 > "$DATA.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA" "$DATA.log"' EXIT
for _ in $(seq 1 120); do curl -sf http://127.0.0.1:8091/readyz >/dev/null && break; sleep 1; done
BATON_ADMIN_KEY=$KEY "$BIN" loadtest --url http://127.0.0.1:8091 --customers "$CUSTOMERS" \
  --agents "${AGENTS:-20}" --messages "$MESSAGES" --pace-ms "$PACE" --server-pid $PID
# The SQLite writer's counters over the whole run (set-up included), per customer message.
curl -s http://127.0.0.1:8091/metrics | awk -v n=$((CUSTOMERS * MESSAGES)) '
  /^baton_sqlite_/ { v[$1] = $2 }
  END {
    if (!("baton_sqlite_writes_total" in v)) exit
    printf "SQLite writer per customer message: %.2f write transactions, held %.0f us, waited %.0f us", \
      v["baton_sqlite_writes_total"] / n, v["baton_sqlite_writer_held_seconds_total"] * 1e6 / n, \
      v["baton_sqlite_writer_wait_seconds_total"] * 1e6 / n
    if (v["baton_sqlite_batch_commits_total"] > 0)
      printf "; %.2f turns and agent replies per batch", \
        v["baton_sqlite_batched_writes_total"] / v["baton_sqlite_batch_commits_total"]
    print ""
  }'
