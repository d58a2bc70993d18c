#!/usr/bin/env bash
# `make run`: a local broker, the seed documents' events and the AWS/GCP samples replayed, both
# stages consuming, metrics up.
# Uses KAFKA_BOOTSTRAP_SERVERS (and SCHEMA_REGISTRY_URL) when set; otherwise starts Apache Kafka and
# Apicurio Registry from Maven Central, or Tansu (in memory) on a machine without Java. Ctrl-C stops
# the stages cleanly and then the local stack.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
VMEVENTS=${VMEVENTS:-.venv/bin/vmevents}
STATE=${STACK_DIR:-.stack}
PORT=${VMEVENTS_METRICS_PORT:-8080}

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  if ! "$PY" deploy/local/stack.py up --registry --state-dir "$STATE" >/dev/null; then
    echo "run: Apache Kafka could not start here; falling back to Tansu (in memory, at-least-once)"
    "$PY" deploy/local/stack.py up --tansu --python "$PY" --state-dir "$STATE" >/dev/null
    export VMEVENTS_PROCESSING_GUARANTEE=at_least_once
  fi
  trap '"$PY" deploy/local/stack.py down --state-dir "$STATE"' EXIT
  set -a
  # shellcheck disable=SC1091
  source "$STATE/env"
  set +a
fi

"$VMEVENTS" replay deploy/local/samples/seed-events.jsonl
"$VMEVENTS" replay deploy/local/samples/synthetic-events.jsonl
"$VMEVENTS" replay deploy/local/samples/aws-gcp-events.jsonl

cat <<MSG

vmevents is running: normalize and correlate stages on ${KAFKA_BOOTSTRAP_SERVERS}
  metrics   http://127.0.0.1:${PORT}/metrics   (normalize)
            http://127.0.0.1:$((PORT + 1))/metrics   (correlate)
  probes    /healthz  /readyz on the same ports
  topics    vm.events.raw -> vm.events.normalized (+ vm.events.dlq) -> failure.reboot.completed, ...
Ctrl-C stops the stages and the local stack.

MSG
"$VMEVENTS" run
