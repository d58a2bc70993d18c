"""Every ingest route over real HTTP on loopback against the real broker (issue #16).

For each route a payload from the vendor's documentation (the samples the normalizer's tests
use, wrapped as each channel delivers them) is accepted, appears on the raw topic byte for byte
with the channel, receive time and principal in its headers, and then, through the normalize
stage, on the normalized topic (nothing in the DLQ). Forged signatures, wrong audiences,
expired tokens, unknown SNS topics, oversized bodies and unauthenticated requests are refused
and write nothing. SNS and Google's keys come from a local host standing in for the vendors'
(tests/ingest_vendor.py).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.config import load_settings
from consumer.serde import Decoder, load_schemas
from tests.ingest_vendor import (
    ALIBABA_ACCOUNT,
    KeyHost,
    alibaba_headers,
    oidc_token,
    sns_message,
    start_key_host,
    vendor_key,
)
from tests.integration.ingesttools import (
    EB_KEY,
    ENTRA_APP,
    ENTRA_AUDIENCE,
    ENTRA_TENANT,
    KEY,
    PATH_SECRET,
    PUBLIC_URL,
    TOKEN,
    Ingest,
    ingest_env,
    start_ingest,
)
from tests.integration.kafkatools import fresh_stage_topics, read_all, stage_env, start_stage
from tests.integration.test_normalize_stage import wait_for
from tests.seeds import SEEDS
from tests.vendor_samples import AWS_HEALTH_SCHEDULED, AWS_STATE_CHANGE, GCP_HOST_ERROR

pytestmark = [pytest.mark.kafka]

SEED = {s.name: s for s in SEEDS}
CERT = "/sns/SimpleNotificationService-test.pem"
ALI_CERT = "/alibaba/eventbridge-test.pem"

# Azure's documented Event Grid schema shape of a Scheduled Events notification (notes:
# vendors-azure-tencent.md), delivered as Event Grid does: an array.
AZURE_EVENT = (b'{"id": "a9c2c2a2-1111-4c5d-9b0e-1b2f3c4d5e6f", "topic": "/subscriptions/sub-1", '
               b'"subject": "/subscriptions/sub-1/resourcegroups/rg/providers/microsoft.compute/'
               b'virtualmachines/vm-1", "eventType": "Microsoft.ResourceNotifications.'
               b'MaintenanceResources.ScheduledEventEmitted", "eventTime": "2025-01-01T00:00:00Z", '
               b'"data": {"resourceInfo": {"id": "/subscriptions/sub-1/resourceGroups/rg/providers/'
               b'Microsoft.Compute/virtualMachines/vm-1", "name": "EventId-1", "properties": '
               b'{"EventType": "Reboot", "EventStatus": "Scheduled"}}}, "dataVersion": "1", '
               b'"metadataVersion": "1"}')


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyHost]:
    host = start_key_host()
    yield host
    host.close()


@pytest.fixture(scope="module")
def topics(kafka_stack: Any) -> dict[str, str]:
    return fresh_stage_topics(kafka_stack.bootstrap, 1)


@pytest.fixture(scope="module")
def ingest(kafka_stack: Any, keys: KeyHost, topics: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    env = ingest_env(stage_env(kafka_stack.bootstrap, **topics), keys)
    service = start_ingest(env, tmp_path_factory.mktemp("ingest") / "ingest.log")
    wait_for(lambda: service.get("/readyz")[0] == 200, 60, "ingest ready", service.proc)
    yield service
    assert service.stop() == 0


def pubsub_body() -> bytes:
    return json.dumps({"message": {"data": base64.b64encode(GCP_HOST_ERROR.raw).decode(),
                                   "attributes": {"logging.googleapis.com/timestamp":
                                                  "2022-06-30T14:07:23.102868Z"},
                                   "messageId": "2070443601311540", "message_id": "2070443601311540",
                                   "publishTime": "2022-06-30T14:07:24.5Z",
                                   "publish_time": "2022-06-30T14:07:24.5Z"},
                       "subscription": "projects/skilled-adapter-452/subscriptions/vmevents-push"},
                      indent=1).encode()


def alibaba_body() -> bytes:
    return json.dumps({
        "datacontenttype": "application/json;charset=utf-8", "aliyunaccountid": ALIBABA_ACCOUNT,
        "aliyunpublishtime": "2019-04-10T16:01:02.011PRC",
        "data": {"eventId": "e-bp11trd********pqum2", "publishTime": "2019-04-09T04:18:26Z",
                 "notBefore": "2019-04-12T01:01:01Z", "instanceId": "i-bp1ecr********5go2go",
                 "eventType": "SystemMaintenance.Reboot", "eventStatus": "Executed",
                 "executeStartTime": "2019-04-10T08:01:01Z",
                 "executeFinishTime": "2019-04-10T08:03:01Z"},
        "subject": f"acs:ecs:cn-hangzhou:{ALIBABA_ACCOUNT}:instance/i-bp1ecr********5go2go",
        "source": "acs.ecs", "type": "ecs:Instance:SystemMaintenance.Reboot:Executed",
        "specversion": "1.0", "aliyuneventbusname": "default",
        "id": "45ef4dewdwe1-7c35-447a-bd93-fab****", "time": "2019-04-10T16:01:01.922+08:00",
        "aliyunregionid": "cn-hangzhou"}).encode()


def test_routes_accept_documented_payloads_refuse_forgeries_and_write_only_what_they_accepted(
        kafka_stack: Any, keys: KeyHost, topics: dict[str, str], ingest: Ingest,
        tmp_path: Path) -> None:
    bootstrap = kafka_stack.bootstrap
    cert = keys.url(CERT)

    # --- refused first: nothing of these may reach the raw topic
    refusals: list[tuple[str, int, str, bytes, dict[str, str]]] = []

    def refuse(what: str, status: int, path: str, body: bytes, headers: dict[str, str]) -> None:
        refusals.append((what, status, path, body, headers))

    forged = sns_message(AWS_HEALTH_SCHEDULED.text, cert)
    forged["Message"] = forged["Message"].replace("RETIREMENT", "REBOOT")
    refuse("forged SNS signature", 401, "/aws/sns", json.dumps(forged).encode(), {})
    refuse("SNS signed by another key", 401, "/aws/sns",
           json.dumps(sns_message("{}", cert, key=vendor_key("other"))).encode(), {})
    refuse("unknown SNS topic", 403, "/aws/sns",
           json.dumps(sns_message("{}", cert, topic="arn:aws:sns:us-east-1:999:other")).encode(), {})
    refuse("SNS cert off the allowed hosts", 401, "/aws/sns",
           json.dumps(sns_message("{}", "https://attacker.example/x.pem")).encode(), {})
    refuse("SNS raw delivery (unsigned)", 401, "/aws/sns", AWS_STATE_CHANGE.raw,
           {"x-amz-sns-rawdelivery": "true"})
    push = pubsub_body()
    refuse("Pub/Sub wrong audience", 401, "/gcp/pubsub", push,
           {"Authorization": f"Bearer {oidc_token(aud='https://elsewhere.example/push')}"})
    refuse("Pub/Sub expired token", 401, "/gcp/pubsub", push,
           {"Authorization": f"Bearer {oidc_token(ttl=-600)}"})
    refuse("Pub/Sub other service account", 403, "/gcp/pubsub", push,
           {"Authorization": f"Bearer {oidc_token(email='x@evil.iam.gserviceaccount.com')}"})
    refuse("Pub/Sub token of a foreign key", 401, "/gcp/pubsub", push,
           {"Authorization": f"Bearer {oidc_token(key=vendor_key('other'))}"})
    refuse("Pub/Sub no token", 401, "/gcp/pubsub", push, {})
    refuse("EventBridge no key", 401, "/aws/eventbridge", AWS_STATE_CHANGE.raw, {})
    refuse("EventBridge wrong key", 401, "/aws/eventbridge", AWS_STATE_CHANGE.raw,
           {"x-api-key": "wrong-key-0123456789"})
    refuse("Event Grid wrong key", 401, f"/azure/eventgrid?code={'x' * 24}",
           b"[" + AZURE_EVENT + b"]", {"aeg-event-type": "Notification"})
    entra_wrong_aud = oidc_token(key=vendor_key("entra"), aud="api://other", verified=False,
                                 iss=f"https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0",
                                 azp=ENTRA_APP)
    refuse("Event Grid Entra token, wrong audience", 401, "/azure/eventgrid",
           b"[" + AZURE_EVENT + b"]", {"Authorization": f"Bearer {entra_wrong_aud}"})
    ali = alibaba_body()
    url = f"{PUBLIC_URL}/alibaba/eventbridge"
    ali_headers = alibaba_headers(url, ali, keys.url(ALI_CERT))
    refuse("Alibaba EventBridge forged body", 401, "/alibaba/eventbridge", ali + b" ", ali_headers)
    refuse("Alibaba EventBridge unsigned", 401, "/alibaba/eventbridge", ali, {})
    refuse("CloudMonitor unlisted source, no secret", 403, "/alibaba/cloudmonitor",
           SEED["ali_maintenance_reboot_scheduled"].raw, {})
    refuse("CloudMonitor wrong secret path", 401, "/alibaba/cloudmonitor/" + "z" * 24,
           SEED["ali_maintenance_reboot_scheduled"].raw, {})
    refuse("generic unauthenticated", 401, "/generic", SEED["jd_envelope_state_change_running"].raw, {})
    refuse("oversized body", 413, "/generic", b'{"x": "' + b"a" * 100_000 + b'"}',
           {"Authorization": f"Bearer {TOKEN}"})
    for what, status, path, body, headers in refusals:
        got, _, _ = ingest.post(path, body, headers)
        assert got == status, what

    # --- accepted: each as its channel delivers it
    sns_note = sns_message(AWS_HEALTH_SCHEDULED.text, cert, version="2")
    sns_body = json.dumps(sns_note, indent=2).encode()
    entra = oidc_token(key=vendor_key("entra"), aud=ENTRA_AUDIENCE, verified=False,
                       iss=f"https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0", azp=ENTRA_APP)
    cm = SEED["ali_maintenance_reboot_scheduled"].raw
    jd = SEED["jd_envelope_state_change_running"].raw
    accepted: list[tuple[str, str, bytes, dict[str, str], list[bytes], str]] = [
        ("sns", "/aws/sns", sns_body, {"x-amz-sns-message-type": "Notification"}, [sns_body],
         "arn:aws:sns:us-east-1:123456789012:ec2-events"),
        ("eventbridge", "/aws/eventbridge", AWS_STATE_CHANGE.raw, {"x-api-key": EB_KEY},
         [AWS_STATE_CHANGE.raw], "eventbridge"),
        ("pubsub", "/gcp/pubsub", push,
         {"Authorization": f"Bearer {oidc_token()}", "Content-Type": "application/json"}, [push],
         "push@my-project.iam.gserviceaccount.com"),
        ("eventgrid", f"/azure/eventgrid?code={KEY}", b"[" + AZURE_EVENT + b"]",
         {"aeg-event-type": "Notification"}, [AZURE_EVENT], "grid"),
        ("eventgrid", "/azure/eventgrid", b"[\n  " + AZURE_EVENT.replace(b"EventId-1", b"EventId-2")
         + b"\n]", {"Authorization": f"Bearer {entra}"},
         [AZURE_EVENT.replace(b"EventId-1", b"EventId-2")], ENTRA_APP),
        ("alibaba_eventbridge", "/alibaba/eventbridge", ali, ali_headers, [ali],
         f"account:{ALIBABA_ACCOUNT}"),
        ("cloudmonitor", f"/alibaba/cloudmonitor/{PATH_SECRET}", cm, {}, [cm], "path:cm"),
        ("generic", "/generic", jd, {"Authorization": f"Bearer {TOKEN}"}, [jd], "jd-relay"),
    ]
    for channel, path, body, headers, _, _ in accepted:
        status, _, answer = ingest.post(path, body, headers)
        assert status == 200, (channel, answer)

    expected = [(channel, record, principal) for channel, _, _, _, records, principal in accepted
                for record in records]
    raw = read_all(bootstrap, [topics["VMEVENTS_RAW_TOPICS"]], expected=len(expected), timeout=30)
    got = []
    for m in raw:
        h = {k: v.decode() for k, v in m.headers() or []}
        assert abs(int(h["vmevents.received_at"]) - time.time() * 1000) < 120_000
        assert m.timestamp()[1] == int(h["vmevents.received_at"])
        got.append((h["vmevents.channel"], m.value(), h["vmevents.principal"]))
    assert sorted(got) == sorted(expected)  # byte for byte, and nothing refused was written

    assert ingest.metric("vmevents_ingest_auth_failures_total", route="sns",
                         reason="bad_signature") == 2
    assert ingest.metric("vmevents_ingest_requests_total", route="generic", status="413") == 1

    # --- then through the normalize stage
    log = tmp_path / "normalize.log"
    stage = start_stage("normalize", stage_env(bootstrap, **topics), log)
    try:
        normalized = read_all(bootstrap, [topics["VMEVENTS_NORMALIZED_TOPIC"]], expected=8,
                              timeout=90, settle=3)
        dlq = read_all(bootstrap, [topics["VMEVENTS_DLQ_TOPIC"]], timeout=30, settle=1)
    finally:
        stage.terminate()
        stage.wait(30)
    decoder = Decoder(load_schemas(load_settings({}).schema_dir))
    channel_at = {m.offset(): dict(m.headers() or [])["vmevents.channel"].decode() for m in raw}
    normalized_channels = {channel_at[decoder.decode(m.value())["source"]["offset"]]
                           for m in normalized}
    assert normalized_channels == {"sns", "eventbridge", "pubsub", "eventgrid",
                                   "alibaba_eventbridge", "cloudmonitor", "generic"}
    assert len(normalized) == 8  # one per raw record: the Event Grid arrays were split by ingest
    azure = sorted(e["vendor_event_id"] for e in map(decoder.decode, (m.value() for m in normalized))
                   if e["vendor"] == "azure")
    assert azure == ["EventId-1", "EventId-2"]
    assert dlq == []


def test_handshakes_answer_and_write_nothing(kafka_stack: Any, keys: KeyHost,
                                            topics: dict[str, str], ingest: Ingest) -> None:
    cert = keys.url(CERT)
    before = len(read_all(kafka_stack.bootstrap, [topics["VMEVENTS_RAW_TOPICS"]], timeout=10, settle=1))
    confirm = sns_message("You have chosen to subscribe", cert, kind="SubscriptionConfirmation",
                          subscribe_url=keys.url("/sns/confirm?Action=ConfirmSubscription&Token=t1"))
    status, _, _ = ingest.post("/aws/sns", json.dumps(confirm).encode(),
                               {"x-amz-sns-message-type": "SubscriptionConfirmation"})
    assert status == 200
    assert any(h.startswith("/sns/confirm?Action=ConfirmSubscription&Token=t1") for h in keys.hits)
    other = sns_message("x", cert, kind="SubscriptionConfirmation", topic="arn:aws:sns:eu-west-1:9:x",
                        subscribe_url=keys.url("/sns/confirm?Action=ConfirmSubscription&Token=t2"))
    assert ingest.post("/aws/sns", json.dumps(other).encode())[0] == 403
    assert not any("Token=t2" in h for h in keys.hits)  # a topic not on the list is never confirmed
    validation = json.dumps([{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", "topic": "/subscriptions/x",
        "subject": "", "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                                "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/x"},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2018-01-25T22:12:19.4556811Z", "metadataVersion": "1", "dataVersion": "1"}])
    status, _, body = ingest.post(f"/azure/eventgrid?code={KEY}", validation.encode(),
                                  {"aeg-event-type": "SubscriptionValidation"})
    assert (status, json.loads(body)) == (200, {"validationResponse":
                                                "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    status, headers, _ = ingest.post(f"/azure/eventgrid?code={KEY}", b"",
                                     {"WebHook-Request-Origin": "eventgrid.azure.net"}, method="OPTIONS")
    assert (status, headers["webhook-allowed-origin"]) == (200, "eventgrid.azure.net")
    after = read_all(kafka_stack.bootstrap, [topics["VMEVENTS_RAW_TOPICS"]], timeout=10, settle=1)
    assert len(after) == before
    assert ingest.metric("vmevents_ingest_handshakes_total", route="sns",
                         kind="subscription_confirmed") == 1
    assert ingest.get("/healthz")[0] == 200  # the event loop turns
    text = ingest.log.read_text()
    for secret in (TOKEN, KEY, EB_KEY, PATH_SECRET):
        assert secret not in text
