"""Which vendor module reads a parsed payload, from its shape alone.

One raw topic may carry every vendor and several envelopes, so detection looks at the payload,
never at the topic. Cheap key probes, most distinctive first; a payload no probe claims is
rejected ``unknown_vendor`` with the keys it had, so the DLQ says what arrived.
"""

from __future__ import annotations

from typing import Final

from consumer.errors import UnknownVendor
from consumer.normalization import aliyun, aws, azure, gcp, huawei, jdcloud, tencent
from consumer.normalization.fields import Adapter, JsonObject

_ALIYUN_SOURCES: Final = frozenset({"acs.ecs", "acs:ecs"})


def detect(obj: JsonObject) -> Adapter:
    """The adapter for a parsed payload; UnknownVendor if none fits.

    In order: JD's ``eventAction`` (detail form); ``source`` naming JD (``jcloud.*``), Alibaba
    EventBridge (``acs.ecs``) or AWS EventBridge (``aws.*``); an SNS notification; a GCP LogEntry
    (``protoPayload``) or its Pub/Sub push envelope; JD's envelope by its detail; a CloudMonitor
    ECS notification; then Azure (the agent's envelope, Activity Log ``records``, Event Grid
    ResourceNotifications types in either schema), Tencent EventBridge (``cvm.cloud.tencent``)
    and Huawei Cloud Eye (``SYS.ECS``, directly or in an SMN notification).
    """
    if "eventAction" in obj:
        return jdcloud.adapt_detail
    source = obj.get("source")
    if type(source) is str:
        if source.startswith("jcloud."):
            return jdcloud.adapt_envelope
        if source in _ALIYUN_SOURCES:
            return aliyun.adapt_eventbridge
        if source.startswith("aws.") and "detail-type" in obj:
            return aws.adapt_eventbridge
        if source == tencent.SOURCE:
            return tencent.adapt_eventbridge
        if source == huawei.SOURCE:
            return huawei.adapt_ces
        if _azure_event_grid(obj):
            return azure.adapt_event_grid
        if "specversion" in obj:
            raise UnknownVendor(f"CloudEvent from source {_clip(source)!r}: only acs.ecs "
                                "(Alibaba ECS) and jcloud.vm (JD Cloud VM) are supported")
    if obj.get("Type") == "Notification" and "Message" in obj:
        return aws.adapt_sns
    if "protoPayload" in obj:
        return gcp.adapt_log_entry
    message = obj.get("message")
    if type(message) is dict and "data" in message and "subscription" in obj:
        return gcp.adapt_pubsub_push
    detail = obj.get("detail")
    if type(detail) is dict and "eventAction" in detail:
        return jdcloud.adapt_envelope
    product = obj.get("product")
    if type(product) is str:
        if product.upper() == "ECS":
            return aliyun.adapt_cloudmonitor
        raise UnknownVendor(f"CloudMonitor event of product {_clip(product)!r}: only ECS "
                            "instance events are supported")
    name = obj.get("name")
    if "content" in obj and type(name) is str and name.startswith(("Instance:", "Disk:")):
        return aliyun.adapt_cloudmonitor
    if azure.ENVELOPE_KEY in obj:
        return azure.adapt_agent
    if "records" in obj:
        return azure.adapt_activity_log
    if _azure_event_grid(obj):
        return azure.adapt_event_grid
    if "DocumentIncarnation" in obj:
        return azure.reject_bare_document
    if obj.get("event_source") == huawei.SOURCE:
        return huawei.adapt_ces
    if obj.get("type") == "Notification" and "message" in obj:
        return huawei.adapt_smn
    keys = ", ".join(sorted(_clip(k) for k in list(obj)[:8]))
    raise UnknownVendor("no JD Cloud VM, Alibaba ECS, AWS EC2, GCP Compute Engine, Azure VM, "
                        f"Tencent Cloud CVM or Huawei Cloud ECS event shape recognised (keys: {keys})")


def _azure_event_grid(obj: JsonObject) -> bool:
    kind = obj.get("eventType") or obj.get("type")
    return type(kind) is str and kind.startswith(azure.EG_PREFIX)


def _clip(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
