"""The deploy check rejects what it must reject and accepts the shipped values.

The check itself is deploy/check/deploycheck.py (run by `make deploy-check` through
deploy/check/run.sh); these tests drive the same functions. They need helm (and promtool / the
deploy tools virtualenv for some), which `bash deploy/tools/install.sh` builds into
~/.cache/vmevents/tools; `make deploy-check` runs before `make test` in CI, so CI always has them.
Elsewhere, without them, the tests are skipped with the reason and the command that installs
them; in CI (CI=true) a missing tool fails the tests instead of skipping them.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "check"))
import deploycheck as dc  # noqa: E402  (deploy/check is not a package)

HELM = dc.find_tool("helm")
PROMTOOL = dc.find_tool("promtool")
PYTOOLS = dc.find_tool("pytools")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

needs_helm = pytest.mark.skipif(
    HELM is None and not IN_CI,
    reason="helm is not installed: run `bash deploy/tools/install.sh helm`")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not IN_CI,
    reason="promtool is not installed: run `bash deploy/tools/install.sh promtool`")
needs_pytools = pytest.mark.skipif(
    PYTOOLS is None and not IN_CI,
    reason="the deploy tools virtualenv is not installed: run `bash deploy/tools/install.sh pytools`")


@pytest.fixture(scope="module")
def production() -> dc.Rendered:
    r = dc.render([dc.PRODUCTION_VALUES])
    assert r.ok, r.message
    return r


def _one(docs: list[dict[str, Any]], kind: str, name_part: str = "") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and name_part in d["metadata"]["name"])


# -- the broken values file fails, the shipped ones pass ---------------------------------------

@needs_helm
def test_broken_values_file_is_rejected_with_a_clear_message() -> None:
    _, problems = dc.check_values([dc.BROKEN_VALUES])
    assert problems, "deploy/check/broken-values.yaml must be rejected"
    text = "\n".join(problems)
    assert "correlate.autoscaling.maxReplicas=24 exceeds 12" in text
    assert "partition count of its input topic(s) vm.events.normalized" in text
    assert "Lower maxReplicas" in text  # says what to do about it


@needs_helm
def test_broken_values_file_fails_the_command_line_check() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "deploy/check/deploycheck.py"), "values",
         str(dc.BROKEN_VALUES)], capture_output=True, text=True, check=False, cwd=REPO)
    assert proc.returncode == 1
    assert "REJECTED" in proc.stdout
    assert "maxReplicas=24 exceeds 12" in proc.stdout


@needs_helm
@needs_pytools
def test_production_values_pass_every_check() -> None:
    rendered, problems = dc.check_values([dc.PRODUCTION_VALUES])
    assert problems == []
    kinds = {d["kind"] for d in rendered.docs}
    assert {"Deployment", "ScaledObject", "TriggerAuthentication", "PodDisruptionBudget",
            "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Job", "ConfigMap",
            "Service", "ServiceAccount"} <= kinds


@needs_helm
def test_default_values_pass_every_check() -> None:
    rendered, problems = dc.check_values()
    assert problems == []
    assert {d["metadata"]["name"] for d in rendered.of_kind("Deployment")} == {
        "vmevents-normalize", "vmevents-correlate"}
    assert len(rendered.of_kind("HorizontalPodAutoscaler")) == 2  # no KEDA on the cluster


# -- each layer of the check catches its kind of mistake ---------------------------------------

@needs_helm
@pytest.mark.parametrize(("sets", "message"), [
    (["correlate.autoscaling.maxReplica=3"], "additional properties 'maxReplica' not allowed"),
    (["normalize.autoscaling.engine=knative"], "value must be one of 'auto', 'keda', 'hpa'"),
    (["kafka.bootstrapServers=kafka"], "/kafka/bootstrapServers"),
    (["normalize.autoscaling.enabled=false", "normalize.replicaCount=13"],
     "normalize.replicaCount=13 exceeds 12"),
    (["terminationGracePeriodSeconds=30"], "terminationGracePeriodSeconds=30 is too short"),
    (["kafka.sasl.mechanism=PLAIN", "kafka.securityProtocol=SASL_SSL"],
     "kafka.sasl.username/password are empty"),
])
def test_chart_refuses_bad_values(sets: list[str], message: str) -> None:
    r = dc.render(sets=sets)
    assert not r.ok
    assert message in r.message


@needs_helm
def test_kubernetes_schema_validation_catches_a_broken_manifest(production: dc.Rendered) -> None:
    docs = copy.deepcopy(production.docs)
    dep = _one(docs, "Deployment", "normalize")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["containerPort"] = "eighty-eighty"
    container["livenessProbe"]["httpGett"] = container["livenessProbe"].pop("httpGet")
    _one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] = {"pods": 1}
    problems = dc.validate_kubernetes(docs)
    text = "\n".join(problems)
    assert "Deployment/vmevents-normalize" in text
    assert "eighty-eighty" in text
    assert "httpGett" in text
    assert "PodDisruptionBudget" in text
    # both ends of the supported range are checked
    assert "(Kubernetes 1.27.0)" in text
    assert "(Kubernetes 1.37.0)" in text


@needs_helm
@needs_pytools
def test_crd_validation_catches_broken_keda_and_operator_objects(
        production: dc.Rendered) -> None:
    docs = copy.deepcopy(production.docs)
    so = _one(docs, "ScaledObject", "correlate")
    so["spec"]["maxReplicaCount"] = "12"
    so["spec"]["pollingIntervall"] = 30
    del so["spec"]["triggers"][0]["type"]
    _one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["intervall"] = "30s"
    _one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]["for"] = 5
    problems = dc.validate_crds(docs)
    text = "\n".join(problems)
    assert "ScaledObject/vmevents-correlate: spec.maxReplicaCount: '12' is not of type 'integer'" \
        in text
    assert "'pollingIntervall' was unexpected" in text
    assert "'type' is a required property" in text
    assert "'intervall' was unexpected" in text
    assert "rules.0.for: 5 is not of type 'string'" in text
    assert dc.validate_crds(production.docs) == []


@needs_helm
def test_chart_invariants_catch_an_insecure_or_unscalable_deployment(
        production: dc.Rendered) -> None:
    docs = copy.deepcopy(production.docs)
    dep = _one(docs, "Deployment", "correlate")
    pod = dep["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    pod["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/healthz"
    pod["terminationGracePeriodSeconds"] = 30
    pod["automountServiceAccountToken"] = True
    del pod["containers"][0]["resources"]["limits"]["memory"]
    so = _one(docs, "ScaledObject", "normalize")
    so["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "someone-else"
    docs.remove(_one(docs, "PodDisruptionBudget", "correlate"))
    text = "\n".join(dc.chart_invariants(docs))
    for expected in ("readOnlyRootFilesystem must be true", "readinessProbe must GET /readyz",
                     "terminationGracePeriodSeconds=30 does not cover",
                     "automountServiceAccountToken must be false",
                     "resources.limits.memory is not set",
                     "KEDA watches group 'someone-else'",
                     "Deployment/vmevents-correlate: no PodDisruptionBudget"):
        assert expected in text


@needs_helm
def test_rendered_settings_are_loaded_by_the_app(production: dc.Rendered) -> None:
    assert dc.app_contract(production.docs) == []
    docs = copy.deepcopy(production.docs)
    cm = next(d for d in docs if d["metadata"]["name"] == "vmevents-config")
    cm["data"]["VMEVENTS_CORRELATE_TIMEOUTS"] = "failure.reboot=soon"
    cm["data"]["VMEVENTS_PROCESSING_GUARANTEE"] = "maybe_once"
    text = "\n".join(dc.app_contract(docs))
    assert "the app rejects the rendered settings" in text


@needs_helm
def test_correlate_pods_read_their_memory_limit_for_the_state_budget(
        production: dc.Rendered) -> None:
    """The Downward API passes the correlate container's own limit in bytes; the check refuses
    a reference to another container, another unit, or a budget the app would refuse."""
    docs = copy.deepcopy(production.docs)
    container = _one(docs, "Deployment", "correlate")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["VMEVENTS_MEMORY_LIMIT_BYTES"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": container["name"], "resource": "limits.memory", "divisor": "1"}
    normalize = _one(docs, "Deployment", "normalize")["spec"]["template"]["spec"]["containers"][0]
    assert "VMEVENTS_MEMORY_LIMIT_BYTES" not in {e["name"] for e in normalize["env"]}
    cm = next(d for d in docs if d["metadata"]["name"] == "vmevents-config")
    assert cm["data"]["VMEVENTS_CORRELATE_MAX_STATE_BYTES"] == "auto"

    ref = env["VMEVENTS_MEMORY_LIMIT_BYTES"]["valueFrom"]["resourceFieldRef"]
    ref["containerName"], ref["divisor"] = "sidecar", "1Mi"
    text = "\n".join(dc.chart_invariants(docs))
    assert "containerName 'sidecar' is not a container of the pod" in text
    assert "divisor '1Mi', the app reads bytes" in text

    ref["containerName"], ref["divisor"] = container["name"], "1"
    container["resources"]["limits"]["memory"] = "400Ki"  # half of it is below the minimum
    text = "\n".join(dc.app_contract(docs))
    assert "VMEVENTS_CORRELATE_MAX_STATE_BYTES=auto: 0.5 of the memory limit 409600" in text
    container["resources"]["limits"]["memory"] = "2Gi"
    cm["data"]["VMEVENTS_CORRELATE_MAX_STATE_BYTES"] = "512"
    text = "\n".join(dc.app_contract(docs))
    assert "VMEVENTS_CORRELATE_MAX_STATE_BYTES='512' is below the minimum" in text


@needs_helm
def test_secrets_never_land_in_the_configmap() -> None:
    r = dc.render([dc.VARIANTS_DIR / "inline-secrets-hpa.yaml"])
    assert r.ok, r.message
    assert "not-a-real-password" not in json.dumps(r.of_kind("ConfigMap"))
    secret = _one(r.docs, "Secret", "credentials")
    assert set(secret["data"]) == {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
                                   "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"}
    # the pre-install hook brings its own copy (the release's Secret does not exist yet then)
    assert _one(r.docs, "Secret", "topics")["metadata"]["annotations"]["helm.sh/hook"] == \
        "pre-install,pre-upgrade"


# -- the topics hook ---------------------------------------------------------------------------

@pytest.fixture
def create_topics() -> Iterator[Any]:
    sys.path.insert(0, str(dc.CHART / "files"))
    try:
        import create_topics as module

        yield module
    finally:
        sys.path.remove(str(dc.CHART / "files"))


@needs_helm
def test_topics_hook_plan_uses_the_apps_operation_table(production: dc.Rendered,
                                                        create_topics: Any) -> None:
    from consumer.correlation.outcome import OUTCOME_KINDS
    from consumer.correlator import outcome_operations

    cm = _one(production.docs, "ConfigMap", "topics")
    spec = json.loads(cm["data"]["topics.json"])
    plan = {t.name: t for t in create_topics.plan(spec)}
    assert "vm.events.raw.jdcloud" not in plan  # raw topics belong to the bridges (create: false)
    assert plan["vm.events.normalized"].partitions == 24
    changelog = plan["vmevents.correlate-changelog"]
    assert changelog.partitions == 24
    assert changelog.strict
    assert changelog.config["cleanup.policy"] == "compact"
    assert plan["vm.events.dlq"].config["retention.ms"] == "1209600000"
    assert all(t.config["min.insync.replicas"] == "2" for t in plan.values())
    operations = outcome_operations()
    assert "failure.reboot.completed" in plan
    assert "maintenance.reboot.timed_out" in plan
    assert "lifecycle.create.completed" in plan  # named by the correlator, not the code table
    assert "unknown.observed" in plan
    opened = plan["vm.operations.open"]
    assert opened.config["cleanup.policy"] == "compact"
    assert not opened.strict  # keyed per operation: any partition count serves
    assert len(plan) == 4 + len(operations) * len(OUTCOME_KINDS)
    assert "vm.operations.open" not in {
        t.name for t in create_topics.plan({**spec, "openOperations": {"name": ""}})}


def test_topics_hook_dry_run_and_guards(tmp_path: Path, create_topics: Any) -> None:
    spec = {"replicationFactor": 1, "minInsyncReplicas": 2,
            "raw": [{"name": "raw", "partitions": 2, "create": True}],
            "normalized": {"name": "n", "partitions": 4}, "dlq": {"name": "d", "partitions": 1},
            "changelog": {"name": "c", "config": {"cleanup.policy": "compact"}},
            "outcomes": {"singleTopic": "outcomes", "partitions": 2}}
    path = tmp_path / "topics.json"
    path.write_text(json.dumps(spec))
    script = str(dc.CHART / "files" / "create_topics.py")
    proc = subprocess.run([sys.executable, script, str(path), "--dry-run"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "minInsyncReplicas=2 exceeds replicationFactor=1" in proc.stderr
    spec["minInsyncReplicas"] = 1
    path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, script, str(path), "--dry-run"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    planned = [json.loads(line) for line in proc.stdout.splitlines()
               if not line.startswith('{"event"')]
    assert [t["name"] for t in planned] == ["raw", "n", "d", "c", "outcomes"]
    assert planned[3]["partitions"] == 4  # the changelog follows the normalized topic


class _FakeAdmin:
    """Enough of AdminClient for apply(): existing topics and their partition counts."""

    def __init__(self, existing: dict[str, int]) -> None:
        self.existing = existing
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> Any:
        class Meta:
            def __init__(self, n: int) -> None:
                self.partitions = dict.fromkeys(range(n))

        class Topics:
            def __init__(self, existing: dict[str, int]) -> None:
                self.topics = {k: Meta(v) for k, v in existing.items()}

        return Topics(self.existing)

    def create_topics(self, new: list[Any], **kw: Any) -> dict[str, Any]:
        from concurrent.futures import Future

        out = {}
        for t in new:
            self.created.append(t)
            f: Future[None] = Future()
            f.set_result(None)
            out[t.topic] = f
        return out


def test_topics_hook_creates_missing_and_refuses_a_changelog_mismatch(create_topics: Any) -> None:
    plan = create_topics.plan({
        "replicationFactor": 3, "minInsyncReplicas": 2, "raw": [],
        "normalized": {"name": "n", "partitions": 12}, "dlq": {"name": "d", "partitions": 3},
        "changelog": {"name": "c", "config": {"cleanup.policy": "compact"}},
        "outcomes": {"create": False}})
    admin = _FakeAdmin({"n": 12, "d": 1})
    problems = create_topics.apply(admin, plan, 3, on_mismatch="warn")
    assert [t.topic for t in admin.created] == ["c"]
    assert admin.created[0].num_partitions == 12
    assert problems == []  # d has 1 partition instead of 3: a warning only
    problems = create_topics.apply(_FakeAdmin({"n": 12, "d": 3, "c": 6}), plan, 3,
                                   on_mismatch="warn")
    assert len(problems) == 1
    assert "topic c has 6 partitions, the values say 12" in problems[0]
    assert "must match" in problems[0]


# -- alert rules and dashboard ------------------------------------------------------------------

@needs_helm
@needs_promtool
@needs_pytools
def test_alert_rules_check_passes() -> None:
    assert dc.step_rules() == []


@needs_promtool
def test_promtool_rule_tests_are_not_vacuous(tmp_path: Path) -> None:
    """A rule whose threshold drifts makes the shipped rule tests fail."""
    rules = dc.ALERTS.read_text(encoding="utf-8")
    broken = rules.replace("increase(vmevents_dlq_total{job=~\"vmevents-(normalize|correlate)\"}"
                           "[10m])) > 0", "increase(vmevents_dlq_total{job=~\"vmevents-"
                           "(normalize|correlate)\"}[10m])) > 5")
    assert broken != rules
    (tmp_path / "vmevents-alerts.yaml").write_text(broken, encoding="utf-8")
    test = tmp_path / "vmevents-alerts.test.yaml"
    test.write_text(dc.ALERT_TESTS.read_text(encoding="utf-8"), encoding="utf-8")
    proc = subprocess.run([str(PROMTOOL), "test", "rules", str(test)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode != 0
    assert "VmeventsDeadLetters" in proc.stdout + proc.stderr


@needs_pytools
def test_dashboard_check_passes_and_catches_unknown_metrics() -> None:
    assert dc.step_dashboard() == []
    series = dc.app_series()
    problems = dc.check_queries({
        "typo": "sum(rate(vmevents_event_total[5m]))",
        "label": 'sum(rate(vmevents_dlq_total{vendor="aliyun"}[5m]))',
        "bucket": 'vmevents_restore_duration_seconds_bucket{le="61.0"}',
        "syntax": "sum(rate(vmevents_dlq_total[5m])",
        "fine": 'sum by (le) (rate(vmevents_restore_duration_seconds_bucket{le="60.0"}[5m]))',
    }, series)
    text = "\n".join(problems)
    assert "metric 'vmevents_event_total' is not exported" in text
    assert "vmevents_dlq_total has no label 'vendor'" in text
    assert "no bucket le='61.0'" in text
    assert "syntax: PromQL does not parse" in text
    assert "fine" not in text


@needs_helm
def test_generated_files_are_up_to_date() -> None:
    assert dc.step_generated() == []
