#!/usr/bin/env bash
# `make run`: a local broker, the seed documents' events and the AWS/GCP and Azure/Tencent/Huawei
# samples replayed, both stages consuming, metrics up.
# Uses KAFKA_BOOTSTRAP_SERVERS (and SCHEMA_REGISTRY_URL) when set; otherwise starts Apache Kafka and
# Apicurio Registry from Maven Central, or Tansu (in memory) on a machine without Java. Ctrl-C stops
# the stages cleanly and then the local stack, also when our output went to a pipe that is gone
# (`make run 2>&1 | tee run.log`: the same Ctrl-C kills tee).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
VMEVENTS=${VMEVENTS:-.venv/bin/vmevents}
STATE=${STACK_DIR:-.stack}
PORT=${VMEVENTS_METRICS_PORT:-8080}
# In-order pairs are decided at once; the seed documents' examples are years apart and out of
# order, so their keys wait for the watermark: with the production lateness (10 min) that is 10 min
# of quiet after the replay. 30 s shows them.
export VMEVENTS_CORRELATE_ALLOWED_LATENESS=${VMEVENTS_CORRELATE_ALLOWED_LATENESS:-30s}

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  # The stack is stopped on every way out, armed before it starts. Its progress lines go to our
  # stderr if that still exists; stack.py ignores a broken one, and `|| true` keeps a failure to
  # stop from masking why we exit.
  stop_stack() { "$PY" deploy/local/stack.py down --state-dir "$STATE" || true; }
  STOP_STACK=stop_stack
  trap stop_stack EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  # VMEVENTS_LOCAL_BROKER=tansu skips Apache Kafka even where Java is installed.
  if [ "${VMEVENTS_LOCAL_BROKER:-apache}" = tansu ] \
      || ! "$PY" deploy/local/stack.py up --registry --state-dir "$STATE" >/dev/null; then
    echo "run: using Tansu (in memory, at-least-once) instead of Apache Kafka"
    "$PY" deploy/local/stack.py up --tansu --python "$PY" --state-dir "$STATE" >/dev/null
    export VMEVENTS_PROCESSING_GUARANTEE=at_least_once
  fi
  set -a
  # shellcheck disable=SC1091
  source "$STATE/env"
  set +a
fi

# The front door: `vmevents ingest` on loopback with a token made for this run, and the samples
# sent through it over HTTP (its generic route), so the whole path runs: HTTP, authentication,
# the broker's ack, then the stages. Stopped with everything else on the way out.
INGEST_PORT=${VMEVENTS_INGEST_PORT:-$((PORT - 80))}
INGEST_METRICS_PORT=$((PORT + 2))
VMEVENTS_PUSH_TOKEN="make-run-$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
export VMEVENTS_PUSH_TOKEN
stop_ingest() {
  if [ -n "${INGEST_PID:-}" ] && kill -0 "$INGEST_PID" 2>/dev/null; then
    kill -TERM "$INGEST_PID" 2>/dev/null || true
    wait "$INGEST_PID" 2>/dev/null || true
  fi
}
trap 'stop_ingest; ${STOP_STACK:-true}' EXIT
VMEVENTS_INGEST_HOST=127.0.0.1 VMEVENTS_INGEST_PORT="$INGEST_PORT" \
  VMEVENTS_METRICS_PORT="$INGEST_METRICS_PORT" \
  VMEVENTS_INGEST_GENERIC_TOKENS="make-run=$VMEVENTS_PUSH_TOKEN" "$VMEVENTS" ingest &
INGEST_PID=$!
for _ in $(seq 1 300); do
  if "$PY" -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:$INGEST_METRICS_PORT/readyz', timeout=1).status != 200)" 2>/dev/null; then
    break
  fi
  kill -0 "$INGEST_PID" 2>/dev/null || { echo "run: vmevents ingest did not start" >&2; exit 1; }
  sleep 0.2
done
INGEST_URL="http://127.0.0.1:$INGEST_PORT/generic"
"$VMEVENTS" replay deploy/local/samples/seed-events.jsonl --via "$INGEST_URL"
"$VMEVENTS" replay deploy/local/samples/synthetic-events.jsonl --via "$INGEST_URL"
"$VMEVENTS" replay deploy/local/samples/aws-gcp-events.jsonl --via "$INGEST_URL"
"$VMEVENTS" replay deploy/local/samples/azure-tencent-huawei-events.jsonl --via "$INGEST_URL"

cat <<MSG

vmevents is running: ingest, normalize and correlate on ${KAFKA_BOOTSTRAP_SERVERS}
  ingest    ${INGEST_URL}   (the samples came in here over HTTP)
            curl -H "Authorization: Bearer \$VMEVENTS_PUSH_TOKEN" -d @event.json ${INGEST_URL}
            (VMEVENTS_PUSH_TOKEN=${VMEVENTS_PUSH_TOKEN})
  metrics   http://127.0.0.1:${PORT}/metrics   (normalize)
            http://127.0.0.1:$((PORT + 1))/metrics   (correlate)
            http://127.0.0.1:${INGEST_METRICS_PORT}/metrics   (ingest)
  probes    /healthz  /readyz on the same ports
  topics    HTTP -> vm.events.raw -> vm.events.normalized (+ vm.events.dlq) -> failure.reboot.completed, ...
Ctrl-C stops the stages and the local stack.

MSG
# Not exec'd: the EXIT trap (stack down) runs after the stages have stopped.
"$VMEVENTS" run || rc=$?
exit "${rc:-0}"
