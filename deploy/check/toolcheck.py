"""Checks that need the deploy tools virtualenv (deploy/tools/requirements.txt).

Run by deploycheck.py with that virtualenv's Python; reads JSON on stdin, writes JSON on stdout.

    crd      [manifest, ...]  -> {"checked": [...], "problems": [...]}
             ScaledObject, TriggerAuthentication (keda.sh/v1alpha1), ServiceMonitor and
             PrometheusRule (monitoring.coreos.com/v1) against models generated from the CRDs'
             OpenAPI schemas, strictly (no type coercion) and rejecting unknown fields.
    promql   {"id": "expr", ...} -> {"id": {"selectors": [{"name": ..., "matchers": {...}}]}
             or {"id": {"error": "..."}}: parse with Prometheus' grammar, list the selectors.
    export DIR  writes the same four CRD schemas as JSON Schema files (closed objects: unknown
             fields fail), so that deploycheck.py validates in-process, without importing the
             (large, slow to import) models on every run.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _unknown_fields(given: Any, kept: Any, path: str) -> list[str]:
    """Keys of ``given`` that the model dropped (unknown to the CRD schema)."""
    out: list[str] = []
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            if key not in kept:
                out.append(f"{where}: unknown field")
            else:
                out.extend(_unknown_fields(value, kept[key], where))
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept, strict=False)):
            out.extend(_unknown_fields(a, b, f"{path}[{i}]"))
    return out


def crd_models() -> dict[tuple[str, str], Any]:
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    return {
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
    }


def _close_objects(node: Any) -> None:
    """Objects with declared properties and no additionalProperties admit nothing else."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


def export_schemas(out_dir: str) -> list[str]:
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (api_version, kind), model in crd_models().items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        _close_objects(schema)
        path = out / f"{api_version.replace('/', '_')}_{kind}.json"
        path.write_text(json.dumps(schema, indent=1, sort_keys=True), encoding="utf-8")
        written.append(str(path))
    return written


def check_crds(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    import pydantic

    models = crd_models()
    checked: list[str] = []
    problems: list[str] = []
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        model = models.get(key)  # type: ignore[arg-type]
        if model is None:
            problems.append(f"{name}: no offline schema for {key[0]} {key[1]}")
            continue
        try:
            obj = model.model_validate(doc, strict=True)
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(f"{name}: {loc}: {err['msg']}")
            continue
        kept = obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
        problems.extend(f"{name}: {p}" for p in _unknown_fields(doc, kept, ""))
        checked.append(name)
    return {"checked": checked, "problems": problems}


def _selectors(node: Any, out: list[dict[str, Any]]) -> None:
    import promql_parser as pp

    if isinstance(node, pp.VectorSelector):
        matchers = {m.name: m.value for m in node.matchers.matchers}
        out.append({"name": node.name or matchers.get("__name__"), "matchers": matchers})
        return
    if isinstance(node, pp.MatrixSelector):
        _selectors(node.vector_selector, out)
        return
    for attr in ("expr", "lhs", "rhs", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            _selectors(child, out)
    for arg in getattr(node, "args", None) or []:
        _selectors(arg, out)


def check_promql(exprs: dict[str, str]) -> dict[str, Any]:
    import promql_parser as pp

    result: dict[str, Any] = {}
    for key, expr in exprs.items():
        try:
            tree = pp.parse(expr)
        except Exception as exc:  # the parser raises ValueError with Prometheus' message
            result[key] = {"error": str(exc)}
            continue
        found: list[dict[str, Any]] = []
        _selectors(tree, found)
        result[key] = {"selectors": found}
    return result


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "export":
        json.dump(export_schemas(argv[1]), sys.stdout)
        return 0
    if len(argv) != 1 or argv[0] not in ("crd", "promql"):
        print("usage: toolcheck.py crd|promql < input.json | export DIR", file=sys.stderr)
        return 2
    data = json.load(sys.stdin)
    out = check_crds(data) if argv[0] == "crd" else check_promql(data)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
