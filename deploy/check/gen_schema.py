"""Write deploy/helm/vmevents/values.schema.json (run after changing values.yaml's shape).

    python deploy/check/gen_schema.py          # rewrite the schema
    python deploy/check/gen_schema.py --check  # exit 1 when the file differs from this source

The schema is written here, in Python, because it is long and repetitive (two stages with the same
shape); objects are closed (`additionalProperties: false`) so that a misspelt key in a values file
fails `helm lint`/`helm template` instead of being silently ignored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from consumer.metrics import RESTORE_BUCKETS  # the app's histogram buckets

OUT = Path(__file__).resolve().parents[1] / "helm" / "vmevents" / "values.schema.json"

TOPIC_NAME = {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"}
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
STR_MAP = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
TOPIC_CONFIG = {"type": "object", "additionalProperties": {"type": ["string", "number"]}}
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENV_MAP = {"type": "object", "propertyNames": {"pattern": ENV_NAME},
           "additionalProperties": {"type": ["string", "number", "boolean"]}}
QUANTITY = {"type": ["string", "number"],
            "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T|e[0-9]+)?$"}


def obj(props: dict[str, Any], required: list[str] | None = None, *,
        closed: bool = True, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if closed:
        out["additionalProperties"] = False
    if required:
        out["required"] = required
    out.update(extra)
    return out


def integer(minimum: int | None = None, maximum: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


RESOURCES = obj({
    "requests": obj({"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY}),
    "limits": obj({"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY}),
}, ["requests", "limits"])


def stage(description: str) -> dict[str, Any]:
    return obj({
        "enabled": {"type": "boolean"},
        "replicaCount": integer(0),
        "resources": RESOURCES,
        "autoscaling": obj({
            "enabled": {"type": "boolean"},
            "engine": enum("auto", "keda", "hpa"),
            "minReplicas": integer(0),
            "maxReplicas": integer(1),
            "lagThreshold": integer(1),
            "activationLagThreshold": integer(0),
            "targetCPUUtilizationPercentage": integer(1, 100),
        }, ["enabled", "engine", "minReplicas", "maxReplicas"]),
        "pdb": obj({"enabled": {"type": "boolean"},
                    "maxUnavailable": {"type": ["integer", "string"]}}),
        "extraEnv": ENV_MAP,
    }, ["enabled", "replicaCount", "resources", "autoscaling"], description=description)


def ingest() -> dict[str, Any]:
    """`vmevents ingest`: its own Deployment, Service, Ingress, PDB and HPA."""
    return obj({
        "enabled": {"type": "boolean"},
        "replicaCount": integer(0),
        "port": integer(1, 65535),
        "config": {"type": "object", "propertyNames": {"pattern": r"^[A-Z][A-Z0-9_]*$"},
                   "additionalProperties": {"type": ["string", "number", "boolean"]},
                   "description": "VMEVENTS_INGEST_<NAME> settings, non-secret"},
        "existingSecret": {"type": "string"},
        "resources": RESOURCES,
        "autoscaling": obj({
            "enabled": {"type": "boolean"},
            "minReplicas": integer(1),
            "maxReplicas": integer(1),
            "targetCPUUtilizationPercentage": integer(1, 100),
        }, ["enabled", "minReplicas", "maxReplicas"]),
        "pdb": obj({"enabled": {"type": "boolean"},
                    "maxUnavailable": {"type": ["integer", "string"]}}),
        "service": obj({"type": enum("ClusterIP", "NodePort", "LoadBalancer"),
                        "port": integer(1, 65535), "annotations": STR_MAP}),
        "ingress": obj({"enabled": {"type": "boolean"}, "className": {"type": "string"},
                        "host": {"type": "string", "minLength": 1},
                        "tlsSecretName": {"type": "string"}, "annotations": STR_MAP}),
        "networkPolicyFrom": {"type": "array", "items": ANY_OBJECT},
        "extraEnv": ENV_MAP,
    }, ["enabled", "port", "resources", "autoscaling"],
        description="The HTTP front door vendors push to (vmevents ingest).")


def probe() -> dict[str, Any]:
    return obj({
        "httpGet": obj({"path": {"type": "string"}, "port": {"type": ["string", "integer"]}},
                       ["path", "port"]),
        "initialDelaySeconds": integer(0), "periodSeconds": integer(1),
        "failureThreshold": integer(1), "successThreshold": integer(1),
        "timeoutSeconds": integer(1),
    }, ["httpGet"])


def schema() -> dict[str, Any]:
    outcome_topic = obj({
        "prefix": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]*$"},
        "singleTopic": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]*$"},
        "create": {"type": "boolean"},
        "operations": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "kinds": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "partitions": integer(1),
        "config": TOPIC_CONFIG,
    })
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "vmevents Helm chart values",
        "type": "object",
        "additionalProperties": False,
        "required": ["image", "kafka", "topics", "normalize", "correlate", "config"],
        "properties": {
            "global": ANY_OBJECT,
            "image": obj({
                "repository": {"type": "string", "minLength": 1},
                "tag": {"type": "string"},
                "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
                "pullPolicy": enum("Always", "IfNotPresent", "Never"),
            }, ["repository"]),
            "imagePullSecrets": {"type": "array", "items": obj({"name": {"type": "string"}},
                                                               ["name"])},
            "nameOverride": {"type": "string"},
            "fullnameOverride": {"type": "string"},
            "commonLabels": STR_MAP,
            "kafka": obj({
                "bootstrapServers": {"type": "string",
                                     "pattern": r"^[^,:\s]+:[0-9]+(,[^,:\s]+:[0-9]+)*$"},
                "securityProtocol": enum("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                "sasl": obj({
                    "mechanism": enum("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                    "username": {"type": "string"},
                    "password": {"type": "string"},
                }),
                "ssl": obj({
                    "caSecretName": {"type": "string"},
                    "caSecretKey": {"type": "string", "minLength": 1},
                    "clientCertSecretName": {"type": "string"},
                }),
                "extraProperties": {"type": "object",
                                    "propertyNames": {"pattern": r"^[a-z][a-z0-9._-]*$"},
                                    "additionalProperties": {"type": ["string", "number",
                                                                      "boolean"]}},
            }, ["bootstrapServers", "securityProtocol"]),
            "schemaRegistry": obj({
                "url": {"type": "string", "pattern": r"^(https?://.+)?$"},
                "basicAuthUserInfo": {"type": "string"},
            }),
            "auth": obj({
                "existingSecret": {"type": "string"},
                "secretKeys": obj({
                    "saslUsername": {"type": "string", "minLength": 1},
                    "saslPassword": {"type": "string", "minLength": 1},
                    "schemaRegistryUserInfo": {"type": "string", "minLength": 1},
                }),
            }),
            "config": obj({
                "processingGuarantee": enum("exactly_once", "at_least_once"),
                "transactionTimeoutMs": integer(1000, 900000),
                "batchSize": integer(1, 1000000),
                "batchTimeoutMs": integer(1),
                "maxIdleMs": integer(0, 60000),
                "defaultTimezone": {"type": "string", "minLength": 1},
                "maxMessageBytes": integer(1024),
                "logFormat": enum("json", "console", "auto"),
                "logLevel": enum("debug", "info", "warning", "error", "critical"),
                # operation=duration[,...]; the deploy check also parses it with the app's parser.
                "correlateTimeouts": {"type": "string", "pattern": r"^([^=,]+=[^=,]+)?(,[^=,]+=[^=,]+)*$"},
                "correlateMaxPending": integer(1),
                # auto, off/0 or a byte size; the deploy check also parses it with the app's parser.
                "correlateMaxStateBytes": {"type": ["string", "integer"],
                                           "pattern": r"^(auto|off|0|[0-9]+(\.[0-9]+)?([kKMGTPE]i?)?)$"},
                "correlateStateMemoryFraction": {"type": "number", "exclusiveMinimum": 0,
                                                 "exclusiveMaximum": 1},
                "createTopics": {"type": "boolean"},
                "normalizeGroup": {"type": "string", "minLength": 1},
                "correlateGroup": {"type": "string", "minLength": 1},
                "extraEnv": ENV_MAP,
            }),
            "topics": obj({
                "raw": {"type": "array", "minItems": 1, "items": obj({
                    "name": TOPIC_NAME, "partitions": integer(1), "create": {"type": "boolean"},
                    "config": TOPIC_CONFIG}, ["name", "partitions"])},
                "normalized": obj({"name": TOPIC_NAME, "partitions": integer(1),
                                   "config": TOPIC_CONFIG}, ["name", "partitions"]),
                "dlq": obj({"name": TOPIC_NAME, "partitions": integer(1), "config": TOPIC_CONFIG},
                           ["name", "partitions"]),
                "changelog": obj({"name": TOPIC_NAME, "config": TOPIC_CONFIG}, ["name"]),
                "openOperations": obj({"name": {"type": "string",
                                                "pattern": r"^([a-zA-Z0-9._-]{1,249})?$"},
                                       "partitions": integer(1),
                                       "config": TOPIC_CONFIG}, ["name"]),
                "outcomes": outcome_topic,
                "replicationFactor": integer(1),
                "minInsyncReplicas": integer(1),
            }, ["raw", "normalized", "dlq", "changelog", "outcomes"]),
            "topicsJob": obj({
                "enabled": {"type": "boolean"},
                "onPartitionMismatch": enum("fail", "warn"),
                "alterExistingConfigs": {"type": "boolean"},
                "activeDeadlineSeconds": integer(30),
                "backoffLimit": integer(0),
                "serviceAccountName": {"type": "string"},
                "resources": RESOURCES,
            }),
            "normalize": stage("The normalize stage (raw topics -> normalized topic + DLQ)."),
            "correlate": stage("The correlate stage (normalized topic -> outcome topics)."),
            "azureAgent": obj({
                "enabled": {"type": "boolean"},
                "delivery": enum("kafka", "http"),
                "httpUrl": {"type": "string", "pattern": r"^(https?://.+)?$"},
                "httpTokenSecret": obj({"name": {"type": "string"},
                                        "key": {"type": "string", "minLength": 1}}),
                "pollIntervalSeconds": {"type": "number", "minimum": 0.01},
                "approveHook": {"type": "string"},
                "approveTypes": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "nodeSelector": STR_MAP,
                "tolerations": {"type": "array", "items": ANY_OBJECT},
                "resources": RESOURCES,
                "extraEnv": ENV_MAP,
            }, ["enabled"], description="The per-node Azure Scheduled Events forwarder."),
            "ingest": ingest(),
            "keda": obj({
                "pollingInterval": integer(1),
                "cooldownPeriod": integer(0),
                "fallbackFailureThreshold": integer(1),
                "fallbackReplicas": integer(0),
                "offsetResetPolicy": enum("earliest", "latest"),
                "limitToPartitionsWithLag": {"type": "boolean"},
                "excludePersistentLag": {"type": "boolean"},
                "unsafeSsl": {"type": "boolean"},
            }),
            "scalingBehavior": ANY_OBJECT,
            "terminationGracePeriodSeconds": integer(1),
            "updateStrategy": ANY_OBJECT,
            "probes": obj({"startup": probe(), "liveness": probe(), "readiness": probe()},
                          ["startup", "liveness", "readiness"]),
            "metricsPort": integer(1024, 65535),
            "serviceAccount": obj({"create": {"type": "boolean"}, "name": {"type": "string"},
                                   "annotations": STR_MAP}),
            "podSecurityContext": ANY_OBJECT,
            "securityContext": ANY_OBJECT,
            "topologySpreadConstraints": {"type": "array", "items": ANY_OBJECT},
            "nodeSelector": STR_MAP,
            "tolerations": {"type": "array", "items": ANY_OBJECT},
            "affinity": ANY_OBJECT,
            "priorityClassName": {"type": "string"},
            "podAnnotations": STR_MAP,
            "podLabels": STR_MAP,
            "service": obj({"annotations": STR_MAP}),
            "serviceMonitor": obj({
                "enabled": {"type": "boolean"}, "interval": DURATION, "scrapeTimeout": DURATION,
                "labels": STR_MAP}),
            "prometheusRule": obj({
                "enabled": {"type": "boolean"},
                "labels": STR_MAP,
                "alertLabels": STR_MAP,
                "runbookUrl": {"type": "string"},
                "thresholds": obj({
                    "timeoutsPerHour": {"type": "number", "minimum": 0},
                    "lagMessages": {"type": "number", "minimum": 0},
                    "lagGrowingFor": DURATION,
                    # A bucket bound of the app's restore histogram: the alert compares buckets.
                    "restoreSeconds": {"type": "number", "enum": list(RESTORE_BUCKETS)},
                    "noEventsSeconds": integer(60),
                    "abortsPer15m": {"type": "number", "minimum": 0},
                    "rebalancesPer15m": {"type": "number", "minimum": 0},
                    "pendingFraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "stateBudgetFraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "notReadyFor": DURATION,
                    "ingestAuthFailuresPerSecond": {"type": "number", "minimum": 0},
                    "ingestServerErrorRatio": {"type": "number", "exclusiveMinimum": 0,
                                               "maximum": 1},
                    "ingestBrokerUnavailableFor": DURATION,
                }),
            }),
            "networkPolicy": obj({
                "enabled": {"type": "boolean"},
                "metricsFrom": {"type": "array", "items": ANY_OBJECT},
                "egress": {"type": "array", "items": ANY_OBJECT},
            }),
        },
    }


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python deploy/check/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
