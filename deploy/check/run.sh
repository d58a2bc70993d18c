#!/usr/bin/env bash
# The deploy check (`make deploy-check`): build/install the tools if needed, then render and
# validate the chart, the image, the alert rules and the dashboard. Exits non-zero on any failure.
#
#   bash deploy/check/run.sh                 # everything
#   bash deploy/check/run.sh chart rules     # some steps (see deploy/check/deploycheck.py)
#
# Needs: the project virtualenv with the `deploy` extra (PYTHON, default .venv/bin/python:
# kubernetes-validate, checkov, pyyaml, and the app itself for its metrics and settings parser),
# Go >= 1.26 on PATH the first time (helm and promtool are built from the Go module proxy into
# ~/.cache/vmevents/tools; cold: several minutes, cached: instant), and a package index for the
# tools virtualenv (deploy/tools/requirements.txt), and Node.js 18+ with npm for the AsyncAPI
# parser (pinned in deploy/tools/install.sh). See deploy/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-.venv/bin/python}"
if [[ ! -x "${PYTHON}" ]] && ! command -v "${PYTHON}" >/dev/null 2>&1; then
  echo "deploy-check: PYTHON=${PYTHON} not found: run 'make venv' (or set PYTHON)" >&2
  exit 2
fi
export PYTHON

echo "deploy-check: tools"
start=$(date +%s)
bash deploy/tools/install.sh helm promtool pytools asyncapi >/dev/null
echo "deploy-check: tools ready in $(( $(date +%s) - start )) s"

export PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"
steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(all)
exec "${PYTHON}" deploy/check/deploycheck.py "${steps[@]}"
