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

"$VMEVENTS" replay deploy/local/samples/seed-events.jsonl
"$VMEVENTS" replay deploy/local/samples/synthetic-events.jsonl
"$VMEVENTS" replay deploy/local/samples/aws-gcp-events.jsonl
"$VMEVENTS" replay deploy/local/samples/azure-tencent-huawei-events.jsonl

cat <<MSG

vmevents is running: normalize and correlate stages on ${KAFKA_BOOTSTRAP_SERVERS}
  metrics   http://127.0.0.1:${PORT}/metrics   (normalize)
            http://127.0.0.1:$((PORT + 1))/metrics   (correlate)
  probes    /healthz  /readyz on the same ports
  topics    vm.events.raw -> vm.events.normalized (+ vm.events.dlq) -> failure.reboot.completed, ...
Ctrl-C stops the stages and the local stack.

MSG
# Not exec'd: the EXIT trap (stack down) runs after the stages have stopped.
"$VMEVENTS" run || rc=$?
exit "${rc:-0}"
