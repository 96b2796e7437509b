#!/usr/bin/env bash
# `baton loadtest` against Baton on PostgreSQL, one instance or two (evals/RESULTS.md, "Load:
# several instances"). With two, every customer talks to instance A and every agent to instance B,
# so each message crosses instances (LISTEN/NOTIFY); with one, both talk to A.
# usage: evals/cluster_loadtest.sh INSTANCES PACE_MS [CUSTOMERS] [MESSAGES]
#   env: AGENTS (default 20), BIN (the binary), PGURL (server with CREATE DATABASE rights,
#        default postgres://postgres@127.0.0.1:5432/postgres), QDRANT (a Qdrant server's gRPC URL;
#        default: each instance keeps a Qdrant Edge index)
set -u
INSTANCES=$1; PACE=$2; CUSTOMERS=${3:-1000}; MESSAGES=${4:-5}
BIN=${BIN:-./target/release/baton}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=baton_load_$$
KEY=loadtest-admin-key-$$
psql "$PGURL" -qc "CREATE DATABASE $DB" || exit 1
DBURL="${PGURL%/*}/$DB"
PIDS=(); DIRS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "${DIRS[@]}"
  psql "$PGURL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
}
trap cleanup EXIT
for n in $(seq 1 "$INSTANCES"); do
  DATA=$(mktemp -d); DIRS+=("$DATA")
  PORT=$((8090 + n))
  # The generator is one address sending as fast as it can: the abuse limits are for other clients.
  env BATON_ADMIN_KEY=$KEY BATON_DATABASE__URL=$DBURL BATON_LIMITS__REQUESTS_PER_IP_PER_SECOND=0 \
  BATON_LIMITS__MESSAGES_PER_CONVERSATION_PER_MINUTE=0 BATON_LIMITS__MAX_CUSTOMER_SOCKETS=0 \
  ${QDRANT:+BATON_INDEX__URL=$QDRANT BATON_INDEX__COLLECTION=$DB} \
    "$BIN" serve --data "$DATA" --bind 127.0.0.1:$PORT > "$DATA.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 120); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 1; done
done
AGENT_PORT=$((8090 + INSTANCES))
BATON_ADMIN_KEY=$KEY "$BIN" loadtest --url http://127.0.0.1:8091 \
  --agent-url http://127.0.0.1:$AGENT_PORT --customers "$CUSTOMERS" \
  --agents "${AGENTS:-20}" --messages "$MESSAGES" --pace-ms "$PACE"
