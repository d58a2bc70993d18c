"""The registry's own verdict: every .avsc is BACKWARD compatible with its released version.

Through the Confluent-compatible API of the real registry (Apicurio in tests):
``PUT /config/{subject}`` sets BACKWARD, the released schema is registered, and
``POST /compatibility/subjects/{subject}/versions/latest`` judges the current one.
"""

from __future__ import annotations

import copy
import json
import urllib.request
from typing import Any

import pytest

from tests.integration.kafkatools import unique
from tests.schema_compat import released_pairs

pytestmark = pytest.mark.registry

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def call(url: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def compatible(registry: str, released: dict[str, Any], current: dict[str, Any]) -> bool:
    subject = f"{unique('compat')}-value"
    call(f"{registry}/config/{subject}", "PUT", {"compatibility": "BACKWARD"})
    call(f"{registry}/subjects/{subject}/versions", "POST", {"schema": json.dumps(released)})
    verdict = call(f"{registry}/compatibility/subjects/{subject}/versions/latest", "POST",
                   {"schema": json.dumps(current)})
    return bool(verdict["is_compatible"])


@pytest.mark.parametrize(("name", "old", "new"), released_pairs(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_current_schema_is_backward_compatible_in_the_registry(
        kafka_stack: Any, name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    assert compatible(kafka_stack.registry_url, old, new), f"avro/{name}.avsc breaks its readers"


def test_the_registry_refuses_a_field_without_a_default(kafka_stack: Any) -> None:
    [(_, old, _)] = [p for p in released_pairs() if p[0] == "OperationOutcome"]
    breaking = copy.deepcopy(old)
    breaking["fields"].append({"name": "cloud_account", "type": "string"})
    assert not compatible(kafka_stack.registry_url, old, breaking)
    fine = copy.deepcopy(old)
    fine["fields"].append({"name": "cloud_account", "type": ["null", "string"], "default": None})
    assert compatible(kafka_stack.registry_url, old, fine)
