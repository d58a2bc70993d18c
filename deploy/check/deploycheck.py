"""Render and validate everything in deploy/: the chart, the image, the alerts, the dashboard.

Shared by ``deploy/check/run.sh`` (the CI entry point, ``make deploy-check``) and by
``tests/deploy``. Each step prints what it checked and returns the problems it found; the command
exits 1 when any step found one.

    python deploy/check/deploycheck.py STEP [STEP...]
    python deploy/check/deploycheck.py all
    python deploy/check/deploycheck.py values my-values.yaml [more.yaml]   # check your values

Steps:
    generated   values.schema.json, the README values table, the dashboard JSON and the
                standalone alert rules are what their generators produce (no hand drift)
    chart       helm lint --strict + helm template for the default values, the production-like
                values and the variants in deploy/check/values/; every manifest validated against
                the Kubernetes schemas (kubernetes-validate, strict, oldest and newest supported
                Kubernetes), CRD kinds against the KEDA / Prometheus Operator schemas, the chart's
                own invariants, and the rendered settings loaded by the app's own config parser
    broken      deploy/check/broken-values.yaml must be rejected, with the expected message
    checkov     checkov on the rendered manifests (default and production values)
    dockerfile  hadolint + checkov + the image's invariants on deploy/Dockerfile
    rules       promtool check rules + promtool test rules (every alert must fire in a test),
                metrics and histogram buckets referenced by the rules exist in the app
    dashboard   every panel has a data source and queries; every query parses and references
                metrics (and labels) that the app exports
    contract    docs/asyncapi.yaml is valid for the AsyncAPI project's parser (with the Avro
                schema parser, resolving avro/*.avsc) and describes every topic the app uses

Tools are found in $HELM / $PROMTOOL / $DEPLOY_TOOLS_PYTHON, then in the tools cache
($VMEVENTS_TOOLS_DIR, default ~/.cache/vmevents/tools, filled by deploy/tools/install.sh), then on
PATH. A missing tool is a problem, never a silent skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART = REPO / "deploy" / "helm" / "vmevents"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
ALERTS = REPO / "deploy" / "prometheus" / "vmevents-alerts.yaml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "vmevents-alerts.test.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "vmevents.json"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
BROKEN_VALUES = HERE / "broken-values.yaml"
VARIANTS_DIR = HERE / "values"
RELEASE = "vmevents"
ASYNCAPI = REPO / "docs" / "asyncapi.yaml"
NAMESPACE = "vmevents"
# helm template's "cluster": the version the chart is rendered for. Manifests are then validated
# against the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest whose
# schemas kubernetes-validate carries.
RENDER_KUBE_VERSION = "1.31.0"
VALIDATE_KUBE_VERSIONS = ("1.27.0", "1.37.0")
BROKEN_MESSAGE = "correlate.autoscaling.maxReplicas=24 exceeds 12"

# The metrics the deployment relies on (the app's contract, issue 4). The app's registry must
# export each; dashboards and rules may use any metric the registry exports.
CONTRACT_METRICS = (
    "vmevents_events_total", "vmevents_dlq_total", "vmevents_unknown_codes_total",
    "vmevents_outcomes_total", "vmevents_operation_duration_seconds_bucket",
    "vmevents_pending_operations", "vmevents_timeouts_total", "vmevents_consumer_lag",
    "vmevents_batch_duration_seconds_bucket", "vmevents_transaction_duration_seconds_bucket",
    "vmevents_transaction_aborts_total", "vmevents_rebalances_total",
    "vmevents_restore_duration_seconds_bucket", "vmevents_ready",
    "vmevents_last_event_timestamp_seconds",
)
# Labels Prometheus adds at scrape time (Prometheus Operator: namespace, pod, service, job, ...).
SCRAPE_LABELS = frozenset({"namespace", "pod", "service", "job", "instance", "endpoint",
                           "container"})

CRD_KINDS = frozenset({
    ("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
})

# checkov findings accepted, each with its reason (also in deploy/README.md). Everything else fails.
CHECKOV_SKIPS_ALL: dict[str, str] = {
    "CKV_K8S_35": "the app reads SASL and registry credentials from environment variables (its "
                  "configuration contract, like librdkafka's own properties); they come from a "
                  "Secret via secretKeyRef, never from the ConfigMap",
}
CHECKOV_SKIPS_DEFAULT: dict[str, str] = {
    "CKV_K8S_43": "default values cannot know the digest of the image the user builds; the "
                  "production values pin image.digest and are checked without this skip",
    "CKV_K8S_15": "default pullPolicy IfNotPresent so that a locally loaded image (kind, "
                  "minikube) works; production values use Always and are checked without this skip",
    "CKV2_K8S_6": "the NetworkPolicy needs the cluster's CIDRs and namespaces, which defaults "
                  "cannot know; production values enable it and are checked without this skip",
}
CHECKOV_SKIPS_DOCKERFILE: dict[str, str] = {
    "CKV_DOCKER_2": "no HEALTHCHECK by design: Kubernetes probes /healthz and /readyz, and "
                    "ignores a Docker HEALTHCHECK",
    "CKV_DOCKER_7": "false positive: FROM ${PYTHON_IMAGE} is an ARG (so a digest can be passed "
                    "in) whose default is a pinned tag; checkov does not resolve ARGs, the "
                    "dockerfile step's own check does and requires a tag",
}


class ToolMissing(Exception):
    """A tool the check needs is not installed: itself a failure, with how to fix it."""


@dataclass
class Rendered:
    ok: bool
    message: str
    docs: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]


# -- tools ------------------------------------------------------------------------------------

def tools_dir() -> Path:
    return Path(os.environ.get("VMEVENTS_TOOLS_DIR",
                               Path.home() / ".cache" / "vmevents" / "tools"))


def find_tool(name: str) -> str | None:
    """helm / promtool / hadolint / checkov / pytools-python, or None."""
    env = {"helm": "HELM", "promtool": "PROMTOOL", "pytools": "DEPLOY_TOOLS_PYTHON"}.get(name)
    if env and os.environ.get(env):
        return os.environ[env]
    if name == "pytools":
        candidate = tools_dir() / "pytools" / "bin" / "python"
        return str(candidate) if candidate.exists() else None
    if name == "asyncapi":  # a directory holding node_modules/@asyncapi/parser
        candidate = tools_dir() / "asyncapi"
        found = (candidate / "node_modules" / "@asyncapi" / "parser").is_dir()
        return str(candidate) if found and shutil.which("node") else None
    if name == "hadolint":
        py = find_tool("pytools")
        candidate = Path(py).parent / "hadolint" if py else None
        if candidate and candidate.exists():
            return str(candidate)
    if name == "checkov":
        candidate = Path(sys.executable).parent / "checkov"
        if candidate.exists():
            return str(candidate)
    cached = tools_dir() / "bin" / name
    if cached.exists():
        return str(cached)
    return shutil.which(name)


def need_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        how = {"helm": "bash deploy/tools/install.sh helm",
               "promtool": "bash deploy/tools/install.sh promtool",
               "pytools": "bash deploy/tools/install.sh pytools",
               "hadolint": "bash deploy/tools/install.sh pytools",
               "checkov": "pip install -e '.[deploy]'",
               "asyncapi": "bash deploy/tools/install.sh asyncapi (needs Node.js and npm)"}[name]
        raise ToolMissing(f"{name} is not installed: run `{how}`")
    return path


def run(cmd: Sequence[str], *, stdin: str | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=REPO)


# -- helm -------------------------------------------------------------------------------------

def helm_args(values: Iterable[Path], sets: Iterable[str] = (),
              api_versions: Iterable[str] = ()) -> list[str]:
    args: list[str] = []
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    for a in api_versions:
        args += ["--api-versions", a]
    return args


def render(values: Iterable[Path] = (), sets: Iterable[str] = (),
           api_versions: Iterable[str] = (), release: str = RELEASE) -> Rendered:
    """helm template; ``ok`` False with helm's own error message when the chart refuses."""
    helm = need_tool("helm")
    proc = run([helm, "template", release, str(CHART), "--namespace", NAMESPACE,
                "--kube-version", RENDER_KUBE_VERSION,
                *helm_args(values, sets, api_versions)])
    if proc.returncode != 0:
        return Rendered(False, proc.stderr.strip() or proc.stdout.strip())
    try:
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    except yaml.YAMLError as exc:
        return Rendered(False, f"rendered manifests are not valid YAML: {exc}", text=proc.stdout)
    return Rendered(True, "", docs, proc.stdout)


def lint(values: Iterable[Path] = (), sets: Iterable[str] = ()) -> list[str]:
    helm = need_tool("helm")
    proc = run([helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                "--kube-version", RENDER_KUBE_VERSION, *helm_args(values, sets)])
    if proc.returncode == 0:
        return []
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
             if ln.startswith(("[ERROR]", "[WARNING]", "Error"))]
    return [f"helm lint: {ln}" for ln in lines] or [f"helm lint failed: {proc.stdout.strip()}"]


# -- manifest validation ----------------------------------------------------------------------

def _name(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


@functools.cache
def _k8s_validator(kind: str, api_version: str, version: str) -> Any:
    """kubernetes-validate's strict schema for one kind, as a reusable validator (the package's
    own validate() stops at the first error and reloads the definitions on every call)."""
    import jsonschema
    import kubernetes_validate as kv
    from kubernetes_validate.utils import all_versions, major_minor, schema_contents
    from referencing import Registry, Resource

    wanted = major_minor(version)
    schema_version = [v for v in all_versions() if major_minor(v) <= wanted][-1]
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{schema_version}-local-strict"
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        raise kv.SchemaNotFoundError(version=wanted, kind=kind, api_version=api_version) from None
    definitions = schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_kubernetes(docs: Sequence[Mapping[str, Any]],
                        versions: Sequence[str] = VALIDATE_KUBE_VERSIONS) -> list[str]:
    """Core kinds against the Kubernetes OpenAPI schemas carried by kubernetes-validate, strict
    (unknown fields fail); every error is reported, not just the first."""
    import kubernetes_validate as kv

    problems = []
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
            continue
        for version in versions:
            try:
                validator = _k8s_validator(str(doc["kind"]), str(doc["apiVersion"]), version)
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as exc:
                why = getattr(exc, "message", "") or repr(exc)
                problems.append(f"{_name(doc)} (Kubernetes {version}): {why}")
                continue
            for err in sorted(validator.iter_errors(dict(doc)), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in err.absolute_path) or "(root)"
                message = err.message if len(err.message) < 300 else err.message[:300] + "..."
                problems.append(f"{_name(doc)} (Kubernetes {version}): {where}: {message}")
    return problems


def crd_schema_dir() -> Path:
    """JSON Schemas of the CRD kinds, exported once from the tools venv's models (toolcheck.py
    export), cached beside that venv and keyed by toolcheck.py's content."""
    import hashlib

    py = need_tool("pytools")
    key = hashlib.sha256((HERE / "toolcheck.py").read_bytes()).hexdigest()[:12]
    out = Path(py).resolve().parent.parent / f"crd-schemas-{key}"
    if not (out / ".complete").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        proc = run([py, str(HERE / "toolcheck.py"), "export", str(tmp)])
        if proc.returncode != 0:
            raise ToolMissing(f"cannot export the CRD schemas: {proc.stderr.strip()[-2000:]}")
        (tmp / ".complete").touch()
        try:
            tmp.rename(out)
        except OSError:  # another run got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def validate_crds(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """KEDA and Prometheus Operator kinds against their CRD schemas: types, required fields,
    enums, and no unknown fields (see crd_schema_dir)."""
    import jsonschema

    crds = [d for d in docs if (d.get("apiVersion"), d.get("kind")) in CRD_KINDS]
    if not crds:
        return []
    schemas = crd_schema_dir()
    problems = []
    for doc in crds:
        path = schemas / f"{str(doc['apiVersion']).replace('/', '_')}_{doc['kind']}.json"
        schema = json.loads(path.read_text(encoding="utf-8"))
        validator = jsonschema.Draft202012Validator(schema)
        for top in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            # Optional fields are anyOf [type, null]: report the reason inside, not the anyOf.
            err = top
            while err.context:
                real = [e for e in err.context if e.validator_value != "null"] or err.context
                err = max(real, key=lambda e: len(e.absolute_path))
            where = ".".join(str(p) for p in err.absolute_path) or "(root)"
            message = err.message if len(err.message) < 300 else err.message[:300] + "..."
            problems.append(f"{_name(doc)}: {where}: {message}")
    return problems


def _containers(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pod = doc["spec"]["template"]["spec"]
    return pod, list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def _security_problems(doc: Mapping[str, Any]) -> list[str]:
    name = _name(doc)
    pod, containers = _containers(doc)
    out = []
    psc = pod.get("securityContext") or {}
    if pod.get("automountServiceAccountToken") is not False:
        out.append(f"{name}: automountServiceAccountToken must be false (no API access needed)")
    if psc.get("runAsNonRoot") is not True:
        out.append(f"{name}: pod securityContext.runAsNonRoot must be true")
    for c in containers:
        where = f"{name} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{where}: readOnlyRootFilesystem must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{where}: capabilities must drop ALL")
        if sc.get("privileged"):
            out.append(f"{where}: must not be privileged")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{where}: seccompProfile must be RuntimeDefault")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(kind) or {}):
                    out.append(f"{where}: resources.{kind}.{r} is not set")
        image = str(c.get("image", ""))
        if image.endswith(":latest") or ("@" not in image and ":" not in image.rsplit("/", 1)[-1]):
            out.append(f"{where}: image {image!r} must be pinned by tag or digest (not latest)")
    return out


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def chart_invariants(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the chart promises beyond schemas: security, probes, grace period, PDB, autoscaler,
    Service, KEDA trigger pointing at the stage's own group, no secret in a ConfigMap."""
    problems: list[str] = []
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(str(d.get("kind")), []).append(d)
        md = d.get("metadata") or {}
        if md.get("namespace") != NAMESPACE:
            problems.append(f"{_name(d)}: metadata.namespace must be the release namespace")
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}
    for cm_name, data in configmaps.items():
        for key in data:
            if re.search(r"PASSWORD|USER_INFO|SECRET|TOKEN", key) and key != "create_topics.py":
                problems.append(f"ConfigMap/{cm_name}: {key} looks like a credential: it belongs "
                                "in a Secret")
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        problems.append("no Deployment rendered")
    autoscaled = {d["spec"]["scaleTargetRef"]["name"]
                  for d in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", [])}
    for dep in deployments:
        name = _name(dep)
        problems.extend(_security_problems(dep))
        pod, containers = _containers(dep)
        problems.extend(f"{name}: {p}" for p in _resource_refs(containers))
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        env = _container_env(containers[0], configmaps)
        tx_ms = int(env.get("VMEVENTS_TRANSACTION_TIMEOUT_MS", "60000"))
        grace = int(pod.get("terminationGracePeriodSeconds", 30))
        if grace < tx_ms // 1000 + 15:
            problems.append(f"{name}: terminationGracePeriodSeconds={grace} does not cover the "
                            f"transaction timeout ({tx_ms} ms) plus leaving the group")
        c = containers[0]
        probes = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, path in probes.items():
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != path:
                problems.append(f"{name}: {probe} must GET {path} (has {got!r})")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        if str(ports.get("http")) != env.get("VMEVENTS_METRICS_PORT", "8080"):
            problems.append(f"{name}: container port 'http' ({ports.get('http')}) is not "
                            f"VMEVENTS_METRICS_PORT ({env.get('VMEVENTS_METRICS_PORT')})")
        if not pod.get("topologySpreadConstraints"):
            problems.append(f"{name}: no topologySpreadConstraints")
        if not any(_selects(p["spec"]["selector"], labels)
                   for p in by_kind.get("PodDisruptionBudget", [])):
            problems.append(f"{name}: no PodDisruptionBudget selects its pods")
        if not any(_selects(s["spec"].get("selector") or {}, labels)
                   for s in by_kind.get("Service", [])):
            problems.append(f"{name}: no Service selects its pods (metrics scraping)")
        if "replicas" not in dep["spec"] and dep["metadata"]["name"] not in autoscaled:
            problems.append(f"{name}: no replicas and no autoscaler: it would run 1 pod")
        if "replicas" in dep["spec"] and dep["metadata"]["name"] in autoscaled:
            problems.append(f"{name}: sets replicas although an autoscaler owns them")
    stage_group = {"normalize": "VMEVENTS_NORMALIZE_GROUP", "correlate": "VMEVENTS_CORRELATE_GROUP"}
    settings = next(iter(configmaps.values()), {})
    for so in by_kind.get("ScaledObject", []):
        stage = so["metadata"]["labels"].get("app.kubernetes.io/component", "")
        for trig in so["spec"]["triggers"]:
            meta = trig.get("metadata", {})
            want = settings.get(stage_group.get(stage, ""), "")
            if trig.get("type") == "kafka" and meta.get("consumerGroup") != want:
                problems.append(f"{_name(so)}: KEDA watches group {meta.get('consumerGroup')!r}, "
                                f"the {stage} stage consumes as {want!r}")
            if meta.get("allowIdleConsumers", "false") != "false":
                problems.append(f"{_name(so)}: allowIdleConsumers must be false")
    secrets = {d["metadata"]["name"]: set((d.get("data") or {}) | (d.get("stringData") or {}))
               for d in by_kind.get("Secret", [])}
    for workload in deployments + by_kind.get("Job", []):
        for c in _containers(workload)[1]:
            for src in c.get("envFrom", []):
                ref = (src.get("configMapRef") or {}).get("name")
                if ref and ref not in configmaps:
                    problems.append(f"{_name(workload)}: envFrom ConfigMap {ref} is not rendered")
            for item in c.get("env", []):
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] in secrets and ref["key"] not in secrets[ref["name"]]:
                    problems.append(f"{_name(workload)}: env {item['name']} refers to key "
                                    f"{ref['key']} that Secret/{ref['name']} does not have")
    for job in by_kind.get("Job", []):
        problems.extend(_security_problems(job))
        hooks = (job["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
        if "pre-install" not in hooks or "pre-upgrade" not in hooks:
            problems.append(f"{_name(job)}: must be a pre-install,pre-upgrade hook")
    return problems


def _resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """What the Downward API puts in an env var from ``resourceFieldRef`` (memory resources;
    the check below makes sure they point at this container with divisor 1)."""
    from consumer.config import parse_bytes

    kind, _, resource = str(ref.get("resource", "")).partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    return str(parse_bytes(str(value))) if value is not None else "node-allocatable"


def _resource_refs(containers: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every ``resourceFieldRef`` names a container of the pod, with a limit it can read, divisor
    1 (bytes): else Kubernetes rejects the pod, or the app reads the node's memory as the limit."""
    problems = []
    names = {c.get("name") for c in containers}
    for c in containers:
        for item in c.get("env", []):
            ref = (item.get("valueFrom") or {}).get("resourceFieldRef")
            if ref is None:
                continue
            where = f"env {item['name']} of container {c.get('name')}"
            if ref.get("containerName") not in names:
                problems.append(f"{where}: containerName {ref.get('containerName')!r} is not a "
                                f"container of the pod ({', '.join(sorted(map(str, names)))})")
            if str(ref.get("divisor", "1")) != "1":
                problems.append(f"{where}: divisor {ref.get('divisor')!r}, the app reads bytes")
            target = next((t for t in containers if t.get("name") == ref.get("containerName")), c)
            kind, _, resource = str(ref.get("resource", "")).partition(".")
            if ((target.get("resources") or {}).get(kind) or {}).get(resource) is None:
                problems.append(f"{where}: {ref.get('resource')} is not set, so the Downward API "
                                "would give the node's allocatable memory")
    return problems


def _container_env(container: Mapping[str, Any],
                   configmaps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The environment a container would see: envFrom ConfigMaps, env (secrets -> placeholders)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        ref = (src.get("configMapRef") or {}).get("name")
        if ref in configmaps:
            env.update({k: str(v) for k, v in configmaps[ref].items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""),
                                       str(item["value"]))
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = "vmevents-normalize-5d8f7c9b4-x2x7q"
        elif "resourceFieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = _resource_value(container, item["valueFrom"]["resourceFieldRef"])
        else:  # shaped to pass any secret's check (the registry's is user:password)
            env[item["name"]] = "from-a:secret"
    return env


def app_contract(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Feed each stage's rendered environment to the app's own settings parser."""
    try:
        from consumer.cli import STAGES
        from consumer.config import load_settings
        from consumer.correlator import CorrelatorConfig
        from consumer.errors import ConfigError
    except ImportError as exc:
        return [f"cannot import the app to check the rendered settings: {exc}"]
    configmaps = {d["metadata"]["name"]: d.get("data") or {}
                  for d in docs if d.get("kind") == "ConfigMap"}
    problems = []
    for dep in (d for d in docs if d.get("kind") == "Deployment"):
        container = dep["spec"]["template"]["spec"]["containers"][0]
        args = list(container.get("args", []))
        if args == ["ingest"]:
            problems.extend(_ingest_contract(dep, container, configmaps))
            continue
        if len(args) != 3 or args[:2] != ["run", "--stage"] or args[2] not in STAGES:
            problems.append(f"{_name(dep)}: args {args} are not `run --stage <{'|'.join(STAGES)}>`")
        env = _container_env(container, configmaps)
        env["VMEVENTS_SCHEMA_DIR"] = str(REPO / "avro")  # the image sets /opt/vmevents/avro
        try:
            settings = load_settings(env)
            CorrelatorConfig.from_spec(settings.correlate_timeouts,
                                       max_pending=settings.correlate_max_pending)
        except ConfigError as exc:
            problems.append(f"{_name(dep)}: the app rejects the rendered settings: {exc}")
    return problems


def _ingest_contract(dep: Mapping[str, Any], container: Mapping[str, Any],
                     configmaps: Mapping[str, Mapping[str, str]]) -> list[str]:
    """`vmevents ingest`'s rendered settings pass its own parser (routes from the Secret are not
    seen here: the inline settings must turn one route on), and its port is the container's."""
    from consumer.config import load_settings
    from consumer.errors import ConfigError
    from consumer.ingest.config import load_ingest_settings

    env = _container_env(container, configmaps)
    env["VMEVENTS_SCHEMA_DIR"] = str(REPO / "avro")
    problems = []
    try:
        settings = load_ingest_settings(env, load_settings(env))
    except ConfigError as exc:
        return [f"{_name(dep)}: the app rejects the rendered ingest settings: {exc}"]
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    if ports.get("ingest") != settings.port:
        problems.append(f"{_name(dep)}: container port 'ingest' ({ports.get('ingest')}) is not "
                        f"VMEVENTS_INGEST_PORT ({settings.port})")
    if settings.topic not in (env.get("VMEVENTS_RAW_TOPICS") or "vm.events.raw").split(","):
        problems.append(f"{_name(dep)}: ingest writes {settings.topic}, which the normalize stage "
                        "does not read")
    return problems


def topics_plan(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The topics hook's plan, computed with the app's operation table, is sane."""
    job_cms = [d for d in docs if d.get("kind") == "ConfigMap"
               and "topics.json" in (d.get("data") or {})]
    if not job_cms:
        return []
    sys.path.insert(0, str(CHART / "files"))
    try:
        import create_topics
    finally:
        sys.path.pop(0)
    problems = []
    data = job_cms[0]["data"]
    if data.get("create_topics.py") != (CHART / "files" / "create_topics.py").read_text().rstrip("\n"):
        problems.append("topics hook ConfigMap: create_topics.py differs from files/create_topics.py")
    spec = json.loads(data["topics.json"])
    topics = create_topics.plan(spec)
    names = [t.name for t in topics]
    valid = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
    problems += [f"topics hook: invalid topic name {n!r}" for n in names if not valid.match(n)]
    by_name = {t.name: t for t in topics}
    normalized = by_name.get(spec["normalized"]["name"])
    changelog = by_name.get(spec["changelog"]["name"])
    if not normalized or not changelog or normalized.partitions != changelog.partitions:
        problems.append("topics hook: the changelog must have the normalized topic's partitions")
    if changelog and changelog.config.get("cleanup.policy") != "compact":
        problems.append("topics hook: the changelog must be compacted (cleanup.policy=compact)")
    if int(spec["minInsyncReplicas"]) > int(spec["replicationFactor"]):
        problems.append("topics hook: minInsyncReplicas exceeds replicationFactor")
    return problems


def validate_rendered(r: Rendered) -> list[str]:
    """Everything the chart step checks on one successful render."""
    problems = validate_kubernetes(r.docs)
    problems += validate_crds(r.docs)
    problems += chart_invariants(r.docs)
    problems += app_contract(r.docs)
    problems += topics_plan(r.docs)
    return problems


def check_values(values: Sequence[Path] = (), sets: Sequence[str] = (),
                 api_versions: Sequence[str] = ()) -> tuple[Rendered, list[str]]:
    """lint + render + validate: the whole chart check for one values set (used by the tests)."""
    problems = lint(values, sets)
    r = render(values, sets, api_versions)
    if not r.ok:
        return r, [*problems, f"helm template failed: {r.message}"]
    return r, problems + validate_rendered(r)


# -- metrics of the app -------------------------------------------------------------------------

@dataclass(frozen=True)
class Series:
    family: str
    type: str
    labels: frozenset[str]
    buckets: tuple[str, ...] = ()


def app_series() -> dict[str, Series]:
    """Every series name the app's registry can expose, with its labels."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.utils import floatToGoString

    from consumer.ingest.metrics import IngestMetrics
    from consumer.metrics import Metrics

    out: dict[str, Series] = {}
    metrics = [*vars(Metrics()).values(), *vars(IngestMetrics(CollectorRegistry())).values()]
    for metric in metrics:
        name, kind = getattr(metric, "_name", None), getattr(metric, "_type", None)
        if not name or not kind:
            continue
        labels = frozenset(getattr(metric, "_labelnames", ()))
        if kind == "counter":
            for suffix in ("_total", "_created"):
                out[name + suffix] = Series(name, kind, labels)
        elif kind == "histogram":
            bounds = tuple(floatToGoString(b) for b in getattr(metric, "_upper_bounds", ()))
            out[name + "_bucket"] = Series(name, kind, labels | {"le"}, bounds)
            for suffix in ("_sum", "_count", "_created"):
                out[name + suffix] = Series(name, kind, labels)
        else:
            out[name] = Series(name, kind, labels)
    out["up"] = Series("up", "gauge", frozenset())
    return out


def parse_promql(exprs: Mapping[str, str]) -> dict[str, Any]:
    proc = run([need_tool("pytools"), str(HERE / "toolcheck.py"), "promql"],
               stdin=json.dumps(dict(exprs)))
    if proc.returncode != 0:
        raise RuntimeError(f"PromQL parser did not run: {proc.stderr.strip()[-2000:]}")
    return dict(json.loads(proc.stdout))


def check_queries(exprs: Mapping[str, str], series: Mapping[str, Series]) -> list[str]:
    """Each expression parses; its selectors name app metrics, with labels those metrics have
    (or scrape labels), and ``le`` values that are bucket bounds of the histogram."""
    problems = []
    for key, result in parse_promql(exprs).items():
        if "error" in result:
            problems.append(f"{key}: PromQL does not parse: {result['error']}: {exprs[key]}")
            continue
        for sel in result["selectors"]:
            name = sel["name"]
            s = series.get(name)
            if s is None:
                problems.append(f"{key}: metric {name!r} is not exported by the app")
                continue
            for label, value in sel["matchers"].items():
                if label == "__name__" or label in SCRAPE_LABELS:
                    continue
                if label not in s.labels:
                    problems.append(f"{key}: {name} has no label {label!r} "
                                    f"(labels: {', '.join(sorted(s.labels)) or 'none'})")
                elif label == "le" and value != "+Inf" and value not in s.buckets:
                    problems.append(f"{key}: {name} has no bucket le={value!r} "
                                    f"(buckets: {', '.join(s.buckets)})")
    return problems


# -- steps -------------------------------------------------------------------------------------

def step_generated() -> list[str]:
    """Generated files are in sync with their sources."""
    problems = []
    for script in (HERE / "gen_schema.py", REPO / "deploy" / "grafana" / "dashboard.py"):
        proc = run([sys.executable, str(script), "--check"])
        if proc.returncode != 0:
            problems.append(proc.stderr.strip() or f"{script} --check failed")
    sys.path.insert(0, str(HERE))
    try:
        import chartdoc
    finally:
        sys.path.pop(0)
    problems += chartdoc.check()
    want = alert_rules_from_chart()
    have = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    if want != have:
        problems.append(f"{ALERTS.relative_to(REPO)} differs from the chart's PrometheusRule: run "
                        "python deploy/check/deploycheck.py write-alerts")
    return problems


def alert_rules_from_chart(values: Sequence[Path] = (),
                           api_versions: Sequence[str] = ()) -> dict[str, Any]:
    r = render(values, ["prometheusRule.enabled=true"], api_versions)
    if not r.ok:
        raise RuntimeError(r.message)
    (rule,) = r.of_kind("PrometheusRule")
    return dict(rule["spec"])


def write_alerts() -> None:
    header = ("# vmevents alert rules for Prometheus without the Prometheus Operator (rule_files:).\n"
              "# GENERATED from the Helm chart's PrometheusRule with default values (release\n"
              "# \"vmevents\", so jobs vmevents-normalize / vmevents-correlate): edit\n"
              "# deploy/helm/vmevents/templates/_alerts.tpl, then run\n"
              "#   python deploy/check/deploycheck.py write-alerts\n"
              "# Tested by vmevents-alerts.test.yaml (promtool test rules).\n")
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    body = yaml.dump(alert_rules_from_chart(), Dumper=Dumper, sort_keys=False, width=4096,
                     allow_unicode=True)
    ALERTS.parent.mkdir(parents=True, exist_ok=True)
    ALERTS.write_text(header + body, encoding="utf-8")
    print(f"wrote {ALERTS}")


def variants() -> list[tuple[str, list[Path], list[str]]]:
    """(label, values files, --api-versions) of every render the chart step checks."""
    out: list[tuple[str, list[Path], list[str]]] = [
        ("default values", [], []),
        ("production values", [PRODUCTION_VALUES], []),
        # engine=auto on a cluster that serves KEDA renders ScaledObjects instead of HPAs
        ("default values on a cluster with KEDA", [], ["keda.sh/v1alpha1/ScaledObject"]),
    ]
    for f in sorted(VARIANTS_DIR.glob("*.yaml")):
        out.append((f"variant {f.name}", [f], []))
    return out


def step_chart() -> list[str]:
    problems = []
    for label, values, apis in variants():
        r, found = check_values(values, api_versions=apis)
        kinds = sorted({str(d.get("kind")) for d in r.docs})
        print(f"  {label}: {len(r.docs)} manifests ({', '.join(kinds)}): "
              f"{'OK' if not found else f'{len(found)} problem(s)'}")
        problems += [f"[{label}] {p}" for p in found]
    return problems


def step_broken() -> list[str]:
    r = render([BROKEN_VALUES])
    if r.ok:
        found = validate_rendered(r)
        if not found:
            return [f"{BROKEN_VALUES.relative_to(REPO)} was accepted: the chart's replica guard "
                    "did not fire"]
        return [f"{BROKEN_VALUES.relative_to(REPO)} rendered, then failed validation instead of "
                f"being refused by the chart: {found[:3]}"]
    if BROKEN_MESSAGE not in r.message:
        return [f"broken values refused, but not with the expected message "
                f"{BROKEN_MESSAGE!r}: {r.message}"]
    print(f"  refused as expected: {r.message.splitlines()[0]}")
    return []


def _write_docs(docs: Sequence[Mapping[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        path = out / f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(dict(doc), sort_keys=False), encoding="utf-8")


def checkov(target: Path, framework: str, skips: Mapping[str, str]) -> list[str]:
    exe = need_tool("checkov")
    flag = "-f" if target.is_file() else "-d"
    cmd = [exe, flag, str(target), "--framework", framework, "--output", "json", "--compact",
           "--skip-download"]
    if skips:
        cmd += ["--skip-check", ",".join(sorted(skips))]
    proc = run(cmd, timeout=900)
    out = proc.stdout.strip()
    if not out:
        return [f"checkov produced no report (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}"]
    reports = json.loads(out)
    if isinstance(reports, dict):
        reports = [reports]
    problems = []
    passed = 0
    for report in reports:
        results = report.get("results", {})
        passed += len(results.get("passed_checks", []))
        for f in results.get("failed_checks", []):
            problems.append(f"checkov {f['check_id']} ({f.get('check_name')}): "
                            f"{f.get('resource')} in {Path(f.get('file_path', '')).name}")
        for err in results.get("parsing_errors", []) or report.get("parsing_errors", []):
            problems.append(f"checkov could not parse {err}")
    print(f"  checkov {framework} {target.name}: {passed} passed, {len(problems)} failed, "
          f"{len(skips)} skipped by policy")
    return problems


def step_checkov() -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory(prefix="vmevents-checkov-") as tmp:
        for label, values, skips in (
            ("default", [], {**CHECKOV_SKIPS_ALL, **CHECKOV_SKIPS_DEFAULT}),
            ("production", [PRODUCTION_VALUES], CHECKOV_SKIPS_ALL),
        ):
            r = render(values)
            if not r.ok:
                problems.append(f"[{label}] cannot render: {r.message}")
                continue
            out = Path(tmp) / label
            _write_docs(r.docs, out)
            problems += [f"[{label}] {p}" for p in checkov(out, "kubernetes", skips)]
    return problems


def dockerfile_invariants(text: str) -> list[str]:
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    froms = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    problems = []
    if len(froms) < 2:
        problems.append("Dockerfile: not multi-stage (build and runtime stages expected)")
        return problems
    final = lines[froms[-1]:]
    if any(ln.upper().startswith("HEALTHCHECK") for ln in lines):
        problems.append("Dockerfile: HEALTHCHECK present (Kubernetes probes do that)")
    users = [ln.split(None, 1)[1] for ln in final if ln.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: the runtime stage must end as a non-root USER")
    elif not users[-1].split(":")[0].isdigit():
        problems.append("Dockerfile: USER must be numeric so runAsNonRoot can verify it")
    final_text = "\n".join(final)
    for needle, why in (("PYTHONUNBUFFERED=1", "logs must not sit in a buffer"),
                        ("VMEVENTS_SCHEMA_DIR=", "the app must find the shipped Avro schemas"),
                        ('ENTRYPOINT ["vmevents"]', "the console script is the entrypoint"),
                        ("COPY avro/", "the Avro schemas must ship in the image")):
        if needle not in final_text:
            problems.append(f"Dockerfile: runtime stage lacks {needle} ({why})")
    compilers = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make)\b")
    if any(compilers.search(ln) for ln in final if ln.upper().startswith("RUN ")):
        problems.append("Dockerfile: a compiler is installed in the runtime stage")
    base = lines[froms[-1]].split()[1]
    arg_default = {m.group(1): m.group(2) for m in
                   (re.match(r"ARG (\w+)=(\S+)", ln) for ln in lines) if m}
    resolved = arg_default.get(base.strip("${}"), base)
    if ":" not in resolved or resolved.endswith(":latest"):
        problems.append(f"Dockerfile: base image {resolved!r} must be pinned by tag")
    return problems


def step_dockerfile() -> list[str]:
    problems = dockerfile_invariants(DOCKERFILE.read_text(encoding="utf-8"))
    hadolint = need_tool("hadolint")
    proc = run([hadolint, "--failure-threshold", "info", "--format", "tty", str(DOCKERFILE)])
    if proc.returncode != 0:
        problems += [f"hadolint: {ln}" for ln in proc.stdout.strip().splitlines()]
    print(f"  hadolint: {'OK' if proc.returncode == 0 else 'findings'}")
    problems += checkov(DOCKERFILE, "dockerfile", CHECKOV_SKIPS_DOCKERFILE)
    return problems


def step_rules() -> list[str]:
    problems = []
    promtool = need_tool("promtool")
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    proc = run([promtool, "check", "rules", str(ALERTS)])
    print(f"  promtool check rules: {proc.stdout.strip().splitlines()[-1] if proc.stdout else ''}")
    if proc.returncode != 0:
        problems.append(f"promtool check rules: {proc.stdout.strip()} {proc.stderr.strip()}")
    proc = run([promtool, "test", "rules", str(ALERT_TESTS)])
    if proc.returncode != 0:
        problems.append(f"promtool test rules failed:\n{proc.stdout.strip()}\n{proc.stderr.strip()}")
    else:
        print(f"  promtool test rules: {ALERT_TESTS.name}: SUCCESS")
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    fired = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
             if t.get("exp_alerts")}
    quiet = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
             if not t.get("exp_alerts")}
    for alert in sorted(set(alerts)):
        if alert not in fired:
            problems.append(f"{ALERT_TESTS.name}: no test where {alert} fires")
        if alert not in quiet:
            problems.append(f"{ALERT_TESTS.name}: no test where {alert} stays quiet")
    print(f"  {len(set(alerts))} alerts, each tested firing and quiet: "
          f"{'yes' if not problems else 'no'}")
    # Every values set renders rules promtool accepts (thresholds, release names, stage sets).
    for label, values, apis in variants():
        try:
            rendered = alert_rules_from_chart(values, apis)
        except RuntimeError as exc:
            problems.append(f"[{label}] cannot render the PrometheusRule: {exc}")
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(rendered, f)
        try:
            proc = run([promtool, "check", "rules", f.name])
            if proc.returncode != 0:
                problems.append(f"[{label}] promtool check rules: {proc.stdout.strip()} "
                                f"{proc.stderr.strip()}")
        finally:
            os.unlink(f.name)
    print(f"  rules rendered from {len(variants())} values sets: promtool check rules "
          f"{'SUCCESS' if not problems else 'FAILED'}")
    exprs = {f"rule {r['alert']}#{i}": r["expr"] for g in rules["groups"]
             for i, r in enumerate(g["rules"])}
    problems += check_queries(exprs, app_series())
    return problems


GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "$window": "1h", "${window}": "1h"}


def _grafana_expr(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def step_dashboard() -> list[str]:
    problems: list[str] = []
    try:
        dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{DASHBOARD.name}: not valid JSON: {exc}"]
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dash:
            problems.append(f"{DASHBOARD.name}: no {key}")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append(f"{DASHBOARD.name}: no 'datasource' variable (the data source must be "
                        "selectable, not hard-wired)")
    exprs: dict[str, str] = {}
    for name, var in variables.items():
        if var.get("type") == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            if not m:
                problems.append(f"variable {name}: expected label_values(<selector>, <label>)")
            else:
                exprs[f"variable {name}"] = m.group(1)
    ids: set[int] = set()
    panels = dash.get("panels", [])
    for p in panels:
        title = p.get("title", "?")
        if p.get("id") in ids:
            problems.append(f"panel {title!r}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            problems.append(f"panel {title!r}: no gridPos")
        if p.get("type") == "row":
            continue
        ds = p.get("datasource") or {}
        if ds.get("uid") != "${datasource}":
            problems.append(f"panel {title!r}: datasource must be the ${{datasource}} variable")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"panel {title!r}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)):
            problems.append(f"panel {title!r}: duplicate refId")
        for t in targets:
            if not str(t.get("expr", "")).strip():
                problems.append(f"panel {title!r} target {t.get('refId')}: empty expr")
            else:
                exprs[f"panel {title!r} {t.get('refId')}"] = _grafana_expr(t["expr"])
    problems += check_queries(exprs, app_series())
    series = app_series()
    used = {s["name"] for r in parse_promql(exprs).values() for s in r.get("selectors", [])}
    families = {series[n].family for n in used if n in series}
    contract = {series[n].family for n in CONTRACT_METRICS if n in series}
    problems += [f"contract metric {n} is not exported by the app" for n in CONTRACT_METRICS
                 if n not in series]
    missing = sorted(contract - families)
    if missing:
        problems.append(f"{DASHBOARD.name}: no panel shows {', '.join(missing)}")
    print(f"  {len(panels)} panels, {len(exprs)} queries, {len(families)} metric families shown")
    return problems


def contract_topics(doc: Mapping[str, Any]) -> list[str]:
    """Every topic the app writes or reads (default names) must be a channel of the document."""
    from consumer.config import Settings
    from consumer.dlq import ledger_topic
    from consumer.runtime.correlate_stage import outcome_topic

    addresses = {c.get("address") for c in doc.get("channels", {}).values()}
    s = Settings()
    outcome = outcome_topic(s, {"operation": "failure.reboot", "outcome": "completed",
                                "known": True})  # type: ignore[arg-type]
    wanted = {"raw": s.raw_topics[0], "normalized": s.normalized_topic, "DLQ": s.dlq_topic,
              "re-drive ledger": ledger_topic(s.dlq_topic), "changelog": s.changelog_topic,
              "open operations": s.open_operations_topic}
    problems = [f"{ASYNCAPI.relative_to(REPO)}: no channel for the {what} topic {topic}"
                for what, topic in wanted.items() if topic not in addresses]
    if outcome != "failure.reboot.completed" or "{operation}.{outcome}" not in addresses:
        problems.append(f"{ASYNCAPI.relative_to(REPO)}: outcome topics ({outcome}) are not "
                        "described by the channel address {operation}.{outcome}")
    return problems


def step_contract() -> list[str]:
    """The AsyncAPI document: valid for the AsyncAPI parser, and complete for the app's topics."""
    tool = need_tool("asyncapi")
    proc = run(["node", str(HERE / "asyncapi_validate.cjs"), tool, str(ASYNCAPI)], timeout=120)
    for line in proc.stdout.splitlines():
        if not line.startswith("error:"):
            print(f"  {line}")
    problems = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    if proc.returncode != 0 and not problems:
        problems.append(proc.stderr.strip() or f"the AsyncAPI parser exited {proc.returncode}")
    problems += contract_topics(yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8")))
    return problems


STEPS: dict[str, Callable[[], list[str]]] = {
    "generated": step_generated,
    "chart": step_chart,
    "broken": step_broken,
    "checkov": step_checkov,
    "dockerfile": step_dockerfile,
    "rules": step_rules,
    "dashboard": step_dashboard,
    "contract": step_contract,
}


def check_values_files(files: Sequence[str]) -> int:
    """``values FILE...``: the chart check for your own values files (exit 1 on a problem)."""
    r, problems = check_values([Path(f).resolve() for f in files])
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        print(f"values {' '.join(files)}: REJECTED ({len(problems)} problem(s))")
        return 1
    print(f"values {' '.join(files)}: OK ({len(r.docs)} manifests valid)")
    return 0


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if args == ["write-alerts"]:
        write_alerts()
        return 0
    if args[:1] == ["values"] and len(args) > 1:
        try:
            return check_values_files(args[1:])
        except ToolMissing as exc:
            print(f"FAIL {exc}")
            return 1
    if args == ["all"]:
        args = list(STEPS)
    unknown = [a for a in args if a not in STEPS]
    if not args or unknown:
        print(f"usage: deploycheck.py all | values FILE... | write-alerts | {' '.join(STEPS)}",
              file=sys.stderr)
        return 2
    failed = []
    for step in args:
        start = time.monotonic()
        print(f"== {step}", flush=True)
        try:
            problems = STEPS[step]()
        except ToolMissing as exc:
            problems = [str(exc)]
        for p in problems:
            print(f"  FAIL {p}")
        status = "ok" if not problems else f"FAILED ({len(problems)} problem(s))"
        print(f"== {step}: {status} in {time.monotonic() - start:.1f} s", flush=True)
        if problems:
            failed.append(step)
    if failed:
        print(f"deploy check FAILED: {', '.join(failed)}")
        return 1
    print("deploy check passed")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv[1:]))
