#!/usr/bin/env bash
# Install the deploy-check tools (helm, promtool) by building them from source with the Go
# toolchain, into a cache directory that survives between CI runs on the same machine.
#
#   bash deploy/tools/install.sh            # installs both, prints their paths
#   bash deploy/tools/install.sh helm       # only helm
#   bash deploy/tools/install.sh promtool   # only promtool
#   bash deploy/tools/install.sh pytools    # the Python tools of deploy/tools/requirements.txt
#                                           # (hadolint, CRD models, PromQL parser) in their own venv
#   bash deploy/tools/install.sh asyncapi   # the AsyncAPI parser (npm packages pinned below),
#                                           # which validates docs/asyncapi.yaml
#
# Nothing is downloaded except Go modules through the configured Go module proxy (GOPROXY).
# A tool already built for the pinned version is reused (a cached run takes well under a second).
# Cold build on a 2-core machine: see deploy/README.md ("Tool build times").
#
# Environment:
#   VMEVENTS_TOOLS_DIR   cache root (default: ~/.cache/vmevents/tools)
#   VMEVENTS_TOOLS_KEEP_GO_CACHE=1  keep the Go module and build caches after a build (about 4 GB;
#                        they only speed up building another version). Default: removed, which
#                        leaves the binaries and the tools virtualenv (about 260 MB).
#   HELM_VERSION         helm.sh/helm/v3 module version (default below)
#   PROMETHEUS_VERSION   github.com/prometheus/prometheus module version; Prometheus 3.X.Y is
#                        published as Go module v0.3XX.Y (default below: Prometheus 3.15.0)
#
# Why promtool is not a plain `go install ...@version`: Prometheus' go.mod carries `replace` and
# `exclude` directives, which `go install pkg@version` refuses. promtool is therefore built from a
# throw-away wrapper module that requires Prometheus and copies those directives, which gives the
# same dependency versions as Prometheus' own build.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
ASYNCAPI_PARSER_VERSION="${ASYNCAPI_PARSER_VERSION:-3.6.6}"            # @asyncapi/parser
ASYNCAPI_AVRO_PARSER_VERSION="${ASYNCAPI_AVRO_PARSER_VERSION:-3.1.0}"  # @asyncapi/avro-schema-parser
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.315.0}"
TOOLS_DIR="${VMEVENTS_TOOLS_DIR:-${HOME}/.cache/vmevents/tools}"

log() { printf '[tools] %s\n' "$*" >&2; }

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    log "ERROR: the Go toolchain is not on PATH; helm and promtool are built from the Go module proxy"
    log "       install Go >= 1.26 (or put prebuilt helm/promtool in ${TOOLS_DIR}/bin) and retry"
    exit 3
  fi
}

go_env() {
  # Module and build caches live beside the binaries so that a warm rebuild (new version) is cheap
  # and the whole cache can be removed with one rm -rf.
  env GOMODCACHE="${TOOLS_DIR}/go/mod" GOCACHE="${TOOLS_DIR}/go/build" \
      GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0 "$@"
}

# go install PKG@VERSION into DIR (helm: its go.mod has no replace/exclude directives)
install_plain() {
  local pkg="$1" version="$2" out_dir="$3"
  GOBIN="${out_dir}" go_env go install -trimpath -ldflags="-s -w" "${pkg}@${version}"
}

# Build PKG from MODULE@VERSION through a wrapper module that copies MODULE's replace/exclude
# directives (see the header). Output binary: DIR/$(basename PKG).
install_wrapped() {
  local module="$1" version="$2" pkg="$3" out_dir="$4"
  local work="${TOOLS_DIR}/src/$(basename "${pkg}")-${version}"
  rm -rf "${work}" && mkdir -p "${work}"
  local gomod
  gomod="$(go_env go mod download -json "${module}@${version}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "${gomod}" ]] || { log "ERROR: could not download ${module}@${version}"; return 1; }
  (
    cd "${work}"
    go_env go mod init vmevents.invalid/toolbuild >/dev/null 2>&1
    # Copy the directives: `go mod edit -json` prints them; turn each into a go mod edit flag.
    local flags=()
    while IFS= read -r flag; do [[ -n "${flag}" ]] && flags+=("${flag}"); done < <(
      go_env go mod edit -json "${gomod}" | python3 -c '
import json, sys
mod = json.load(sys.stdin)
def at(m):
    return m["Path"] + ("@" + m["Version"] if m.get("Version") else "")
for x in mod.get("Exclude") or []:
    print("-exclude=" + at(x))
for r in mod.get("Replace") or []:
    if not r["New"].get("Version"):
        sys.exit("local-path replace of " + r["Old"]["Path"] + " cannot be copied")
    print("-replace=" + at(r["Old"]) + "=" + at(r["New"]))
')
    if [[ ${#flags[@]} -gt 0 ]]; then go_env go mod edit "${flags[@]}"; fi
    go_env go get "${pkg}@${version}"
    go_env go build -trimpath -ldflags="-s -w" -o "${out_dir}/$(basename "${pkg}")" "${pkg}"
  )
}

# build NAME VERSION PACKAGE -> ${TOOLS_DIR}/bin/NAME-VERSION, symlinked as ${TOOLS_DIR}/bin/NAME
build() {
  local name="$1" version="$2" pkg="$3" module="${4:-}"
  local bin_dir="${TOOLS_DIR}/bin"
  local target="${bin_dir}/${name}-${version}"
  mkdir -p "${bin_dir}"
  if [[ -x "${target}" ]]; then
    ln -sfn "${name}-${version}" "${bin_dir}/${name}"
    log "${name} ${version}: cached at ${target}"
    return 0
  fi
  need_go
  local gobin start end
  gobin="$(mktemp -d "${TOOLS_DIR}/.gobin.XXXXXX")"
  log "${name} ${version}: building ${pkg}@${version} with $(go version | awk '{print $3}') (cold builds take minutes)"
  start=$(date +%s)
  local ok=1
  if [[ -n "${module}" ]]; then
    install_wrapped "${module}" "${version}" "${pkg}" "${gobin}" || ok=0
  else
    install_plain "${pkg}" "${version}" "${gobin}" || ok=0
  fi
  if [[ ${ok} -ne 1 || ! -x "${gobin}/${name}" ]]; then
    rm -rf "${gobin}"
    log "ERROR: building ${pkg}@${version} failed (see the Go output above)"
    exit 4
  fi
  end=$(date +%s)
  mv "${gobin}/${name}" "${target}"
  rm -rf "${gobin}"
  ln -sfn "${name}-${version}" "${bin_dir}/${name}"
  BUILT=1
  log "${name} ${version}: built in $((end - start)) s -> ${target}"
  printf '%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${name}" "${version}" "$((end - start))" \
    >> "${TOOLS_DIR}/build-times.tsv"
}

# A virtualenv with deploy/tools/requirements.txt, keyed by the file's hash; PYTHON makes it.
pytools() {
  local req here hash env_dir
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  req="${here}/requirements.txt"
  hash="$(sha256sum "${req}" | cut -c1-12)"
  env_dir="${TOOLS_DIR}/pytools-${hash}"
  if [[ -x "${env_dir}/bin/python" && -f "${env_dir}/.complete" ]]; then
    ln -sfn "pytools-${hash}" "${TOOLS_DIR}/pytools"
    log "pytools ${hash}: cached at ${env_dir}"
    return 0
  fi
  local python="${PYTHON:-python3}"
  local start end
  start=$(date +%s)
  rm -rf "${env_dir}"
  "${python}" -m venv "${env_dir}"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "${env_dir}/bin/pip" install -q -r "${req}" || {
    log "ERROR: pip install -r ${req} failed"; exit 4; }
  touch "${env_dir}/.complete"
  ln -sfn "pytools-${hash}" "${TOOLS_DIR}/pytools"
  end=$(date +%s)
  log "pytools ${hash}: installed in $((end - start)) s -> ${env_dir}"
}

# The AsyncAPI project's parser and its Avro schema parser, installed with npm by package name
# at pinned versions into a directory keyed by those versions; needs Node.js 18+ and npm.
asyncapi() {
  local key="parser-${ASYNCAPI_PARSER_VERSION}-avro-${ASYNCAPI_AVRO_PARSER_VERSION}"
  local dir="${TOOLS_DIR}/asyncapi-${key}"
  if [[ -f "${dir}/.complete" ]]; then
    ln -sfn "asyncapi-${key}" "${TOOLS_DIR}/asyncapi"
    log "asyncapi ${key}: cached at ${dir}"
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "ERROR: npm is not on PATH; the AsyncAPI parser is installed with npm (Node.js 18+)"
    exit 3
  fi
  local start end
  start=$(date +%s)
  rm -rf "${dir}" && mkdir -p "${dir}"
  printf '{"private": true, "dependencies": {"@asyncapi/parser": "%s", "@asyncapi/avro-schema-parser": "%s"}}\n' \
    "${ASYNCAPI_PARSER_VERSION}" "${ASYNCAPI_AVRO_PARSER_VERSION}" > "${dir}/package.json"
  (cd "${dir}" && npm install --no-audit --no-fund --omit=dev --loglevel=error >&2) || {
    log "ERROR: npm install of the AsyncAPI parser failed"; exit 4; }
  touch "${dir}/.complete"
  ln -sfn "asyncapi-${key}" "${TOOLS_DIR}/asyncapi"
  end=$(date +%s)
  log "asyncapi ${key}: installed in $((end - start)) s -> ${dir}"
}

main() {
  local want=("$@")
  [[ ${#want[@]} -eq 0 ]] && want=(helm promtool pytools asyncapi)
  mkdir -p "${TOOLS_DIR}"
  # One installer at a time (pytest and run.sh may both ask for the tools).
  exec 9>"${TOOLS_DIR}/.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  BUILT=0
  for tool in "${want[@]}"; do
    case "${tool}" in
      helm) build helm "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm ;;
      promtool) build promtool "${PROMETHEUS_VERSION}" github.com/prometheus/prometheus/cmd/promtool \
                  github.com/prometheus/prometheus ;;
      pytools) pytools; printf '%s\n' "${TOOLS_DIR}/pytools/bin/python"; continue ;;
      asyncapi) asyncapi; printf '%s\n' "${TOOLS_DIR}/asyncapi"; continue ;;
      *) log "ERROR: unknown tool ${tool} (known: helm promtool pytools asyncapi)"; exit 2 ;;
    esac
    printf '%s\n' "${TOOLS_DIR}/bin/${tool}"
  done
  if [[ ${BUILT} -eq 1 && "${VMEVENTS_TOOLS_KEEP_GO_CACHE:-0}" != "1" && -d "${TOOLS_DIR}/go" ]]; then
    go_env go clean -cache -modcache >/dev/null 2>&1 || true
    rm -rf "${TOOLS_DIR}/go" "${TOOLS_DIR}/src"
    log "removed the Go caches (set VMEVENTS_TOOLS_KEEP_GO_CACHE=1 to keep them)"
  fi
}

main "$@"
