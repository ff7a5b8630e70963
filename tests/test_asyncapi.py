"""Tests of the AsyncAPI 3 export, checked against the key rules of the AsyncAPI 3.0.0 spec.

No official AsyncAPI JSON Schema is published on PyPI, so ``assert_asyncapi3`` checks the
parts of the specification the export relies on by hand: the fixed fields allowed in each
object, key patterns, that every ``$ref`` resolves, and that an operation's messages are
messages of its own channel.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from choreo.choreography.asyncapi import (
    AVRO_SCHEMA_FORMAT,
    ENVELOPE_SCHEMA_ID,
    dump_asyncapi,
    envelope_headers_schema,
    to_asyncapi,
)
from choreo.choreography.discovery import discover
from choreo.choreography.graph import Choreography
from choreo.errors import ConfigurationError
from choreo.model.envelope import Envelope, Header, Role

NS = "test.shop."
KEY = re.compile(r"^[a-zA-Z0-9\.\-_]+$")
ALLOWED = {
    "root": {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    },
    "info": {
        "title",
        "version",
        "description",
        "termsOfService",
        "contact",
        "license",
        "tags",
        "externalDocs",
    },
    "server": {
        "host",
        "protocol",
        "protocolVersion",
        "pathname",
        "description",
        "title",
        "summary",
        "variables",
        "security",
        "tags",
        "externalDocs",
        "bindings",
    },
    "channel": {
        "address",
        "messages",
        "title",
        "summary",
        "description",
        "servers",
        "parameters",
        "tags",
        "externalDocs",
        "bindings",
    },
    "operation": {
        "action",
        "channel",
        "title",
        "summary",
        "description",
        "security",
        "tags",
        "externalDocs",
        "bindings",
        "traits",
        "messages",
        "reply",
    },
    "message": {
        "headers",
        "payload",
        "correlationId",
        "contentType",
        "name",
        "title",
        "summary",
        "description",
        "tags",
        "externalDocs",
        "bindings",
        "examples",
        "traits",
    },
    "components": {
        "schemas",
        "servers",
        "channels",
        "operations",
        "messages",
        "securitySchemes",
        "serverVariables",
        "parameters",
        "correlationIds",
        "replies",
        "replyAddresses",
        "externalDocs",
        "tags",
        "operationTraits",
        "messageTraits",
        "serverBindings",
        "channelBindings",
        "operationBindings",
        "messageBindings",
    },
    "kafka-channel": {"topic", "partitions", "replicas", "topicConfiguration", "bindingVersion"},
    "kafka-message": {
        "key",
        "schemaIdLocation",
        "schemaIdPayloadEncoding",
        "schemaLookupStrategy",
        "bindingVersion",
    },
}
CORRELATION_LOCATION = re.compile(r"^\$message\.(header|payload)#(\/(([^\/~])|(~[01]))*)*$")


def fixed_fields(obj: dict[str, Any], kind: str) -> None:
    """Fail if ``obj`` has a field its AsyncAPI object kind does not define (x- allowed)."""
    unknown = {k for k in obj if not k.startswith("x-")} - ALLOWED[kind]
    assert not unknown, f"{kind} has unknown fields {unknown}"


def resolve(document: dict[str, Any], ref: str) -> Any:
    """Return what a local JSON pointer ``ref`` (``#/a/b``) points to, failing if nothing."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and key in node, f"{ref} does not resolve"
        node = node[key]
    return node


def assert_asyncapi3(document: dict[str, Any]) -> None:
    """Check ``document`` against the AsyncAPI 3.0.0 rules the export relies on."""
    fixed_fields(document, "root")
    assert document["asyncapi"] == "3.0.0"
    fixed_fields(document["info"], "info")
    assert isinstance(document["info"]["title"], str) and document["info"]["title"]
    assert isinstance(document["info"]["version"], str) and document["info"]["version"]
    for server in document.get("servers", {}).values():
        fixed_fields(server, "server")
        assert {"host", "protocol"} <= set(server)
    fixed_fields(document["components"], "components")
    for section in ("channels", "operations"):
        assert isinstance(document[section], dict)
    for key in [*document["channels"], *document["components"]["messages"]]:
        assert KEY.match(key), key
    for channel_id, channel in document["channels"].items():
        fixed_fields(channel, "channel")
        assert isinstance(channel["address"], str)
        fixed_fields(channel["bindings"]["kafka"], "kafka-channel")
        for message_id, ref in channel["messages"].items():
            assert KEY.match(message_id), message_id
            message = resolve(document, ref["$ref"])
            assert message is document["components"]["messages"][message_id], channel_id
    for operation_id, operation in document["operations"].items():
        fixed_fields(operation, "operation")
        assert operation["action"] in ("send", "receive"), operation_id
        channel_ref = operation["channel"]["$ref"]
        resolve(document, channel_ref)
        for message in operation["messages"]:
            # "The messages MUST be a subset of the messages defined in the channel referenced"
            assert message["$ref"].startswith(channel_ref + "/messages/"), operation_id
            resolve(document, message["$ref"])
        for tag in operation.get("tags", []):
            assert set(tag) <= {"name", "description", "externalDocs"} and tag["name"]
    for message in document["components"]["messages"].values():
        fixed_fields(message, "message")
        assert CORRELATION_LOCATION.match(message["correlationId"]["location"])
        fixed_fields(message["bindings"]["kafka"], "kafka-message")
        if "payload" in message:
            assert set(message["payload"]) == {"schemaFormat", "schema"}
        for part in message["headers"]["allOf"]:
            if "$ref" in part:
                resolve(document, part["$ref"])


@pytest.fixture(scope="module")
def shop() -> Choreography:
    """Return the valid order-fulfilment choreography."""
    return discover("fixtures.choreographies.valid_order").choreography()


def test_document_follows_asyncapi_3(shop: Choreography) -> None:
    """The export passes the structural checks of AsyncAPI 3.0.0."""
    document = to_asyncapi(shop, title="Shop", version="0.3.0", description="Orders.")
    assert_asyncapi3(document)
    assert document["info"] == {"title": "Shop", "version": "0.3.0", "description": "Orders."}
    assert "servers" not in document


def test_one_channel_per_topic_named_by_default_after_the_event(shop: Choreography) -> None:
    """By default each event type has its own topic, named after its full name."""
    document = to_asyncapi(shop)
    assert set(document["channels"]) == set(shop.event_types)
    channel = document["channels"][NS + "OrderCreated"]
    assert channel["address"] == NS + "OrderCreated"
    assert channel["bindings"]["kafka"]["topic"] == NS + "OrderCreated"
    assert list(channel["messages"]) == [NS + "OrderCreated"]


def test_operations_per_handler(shop: Choreography) -> None:
    """A handler receives from each topic it consumes and sends to each it emits to."""
    operations = to_asyncapi(shop)["operations"]
    reserve = {k: v for k, v in operations.items() if v["x-choreo-step"] == "inventory.reserve"}
    assert {(v["action"], v["channel"]["$ref"]) for v in reserve.values()} == {
        ("receive", f"#/channels/{NS}OrderCreated"),
        ("send", f"#/channels/{NS}InventoryReserved"),
        ("send", f"#/channels/{NS}InventoryReservationFailed"),
    }
    assert all(v["tags"] == [{"name": "inventory"}] for v in reserve.values())
    assert all(v["x-choreo-kind"] == "compensatable" for v in reserve.values())
    start = operations["order.start.send.OrderFulfillment"]
    assert start["action"] == "send" and start["x-choreo-kind"] == "start"
    assert start["channel"] == {"$ref": f"#/channels/{NS}OrderCreated"}
    receives = sum(1 for v in operations.values() if v["action"] == "receive")
    sends = sum(1 for v in operations.values() if v["action"] == "send")
    assert receives == sum(len(h.consumes) for h in shop.handlers)
    assert sends == sum(len(h.emitted_types) for h in shop.handlers) + 1


def test_custom_topic_naming_groups_messages(shop: Choreography) -> None:
    """With one topic per saga, one channel carries every message and operations group them."""
    document = to_asyncapi(shop, topic_naming=lambda event_type: "shop.saga-events")
    assert_asyncapi3(document)
    assert list(document["channels"]) == ["shop.saga-events"]
    assert len(document["channels"]["shop.saga-events"]["messages"]) == 14
    release = document["operations"]["inventory.release.receive.shop.saga-events"]
    assert [m["$ref"].rpartition("/")[2] for m in release["messages"]] == [
        NS + "PaymentDeclined",
        NS + "PaymentRefunded",
    ]


def test_messages_carry_roles_headers_and_key(shop: Choreography) -> None:
    """Each message names its role per saga, pins its type header and keys by correlation id."""
    messages = to_asyncapi(shop)["components"]["messages"]
    completed = messages[NS + "OrderCompleted"]
    assert completed["name"] == "OrderCompleted"
    assert completed["summary"] == "Terminal: the order was fulfilled."
    assert completed["x-choreo-roles"] == {"OrderFulfillment": "completed"}
    assert completed["tags"] == [{"name": "OrderFulfillment"}]
    pinned = completed["headers"]["allOf"][1]["properties"]
    assert pinned[Header.EVENT_TYPE] == {"const": NS + "OrderCompleted"}
    assert pinned[Header.ROLE] == {"enum": ["completed"]}
    assert completed["correlationId"]["location"] == "$message.header#/choreo-correlation-id"
    assert completed["bindings"]["kafka"]["key"]["type"] == "string"
    assert messages[NS + "PaymentDeclined"]["x-choreo-roles"] == {"OrderFulfillment": "failure"}
    assert "payload" not in completed


def test_envelope_headers_schema_accepts_real_headers() -> None:
    """Headers written by a real Envelope validate against the exported JSON Schema."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = envelope_headers_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    start = Envelope.start(NS + "OrderCreated", saga="OrderFulfillment", service="order")
    caused = start.caused(NS + "PaymentDeclined", role=Role.FAILURE, service="payment", step="p.c")
    for envelope in (start, caused):
        headers = {k: v.decode() for k, v in envelope.to_headers()}
        jsonschema.validate(headers, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({Header.EVENT_TYPE: "x"}, schema)


def test_message_headers_pin_type_and_role(shop: Choreography) -> None:
    """A message's headers schema accepts its own events and refuses another type or role."""
    jsonschema = pytest.importorskip("jsonschema")
    document = to_asyncapi(shop)
    headers_schema = document["components"]["messages"][NS + "PaymentDeclined"]["headers"]
    inlined = {
        "allOf": [
            document["components"]["schemas"][ENVELOPE_SCHEMA_ID],
            headers_schema["allOf"][1],
        ]
    }
    start = Envelope.start(NS + "OrderCreated", saga="OrderFulfillment", service="order")
    good = start.caused(NS + "PaymentDeclined", role=Role.FAILURE, service="payment")
    jsonschema.validate({k: v.decode() for k, v in good.to_headers()}, inlined)
    for bad in (
        start.caused(NS + "PaymentDeclined", role=Role.STEP, service="payment"),
        start.caused(NS + "PaymentCharged", role=Role.FAILURE, service="payment"),
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({k: v.decode() for k, v in bad.to_headers()}, inlined)


def avro_record(full_name: str) -> dict[str, Any]:
    """Return a minimal Avro record schema named ``full_name``."""
    return {"type": "record", "name": full_name, "fields": [{"name": "id", "type": "string"}]}


def test_payloads_from_a_mapping_of_schemas(shop: Choreography) -> None:
    """With schemas, each message's payload is its Avro schema in the Avro schema format."""
    schemas = {name: avro_record(name) for name in shop.event_types}
    schemas[NS + "OrderFailed"] = json.dumps(avro_record(NS + "OrderFailed"))  # JSON text too
    document = to_asyncapi(shop, schemas)
    assert_asyncapi3(document)
    for name, message in document["components"]["messages"].items():
        assert message["payload"] == {
            "schemaFormat": AVRO_SCHEMA_FORMAT,
            "schema": avro_record(name),
        }


@dataclass(frozen=True)
class FakeVersion:
    """Looks like a registry's schema version: the schema is in ``.schema``."""

    schema: dict[str, Any]


class FakeRegistry:
    """Looks like a schema registry: ``names()`` and ``get()`` raising LookupError."""

    def __init__(self, names: list[str]) -> None:
        self._names = names

    def names(self) -> tuple[str, ...]:
        """Return the known names."""
        return tuple(self._names)

    def get(self, full_name: str) -> FakeVersion:
        """Return the version of ``full_name`` or raise LookupError."""
        if full_name not in self._names:
            raise LookupError(full_name)
        return FakeVersion(avro_record(full_name))


def test_payloads_from_a_registry_and_missing_ones_logged(
    shop: Choreography, caplog: pytest.LogCaptureFixture
) -> None:
    """A registry's versions give payloads; an event without schema has none and is logged."""
    registry = FakeRegistry([n for n in shop.event_types if n != NS + "NotificationSent"])
    with caplog.at_level(logging.WARNING, logger="choreo.choreography.asyncapi"):
        document = to_asyncapi(shop, registry)
    messages = document["components"]["messages"]
    assert messages[NS + "OrderCreated"]["payload"]["schema"] == avro_record(NS + "OrderCreated")
    assert "payload" not in messages[NS + "NotificationSent"]
    assert any("test.shop.NotificationSent" in r.getMessage() for r in caplog.records)


def test_bootstrap_adds_a_kafka_server(shop: Choreography) -> None:
    """``bootstrap`` lists the broker as a Kafka server."""
    document = to_asyncapi(shop, bootstrap="127.0.0.1:19092")
    assert document["servers"]["kafka"]["host"] == "127.0.0.1:19092"
    assert document["servers"]["kafka"]["protocol"] == "kafka"
    assert_asyncapi3(document)


def test_json_and_yaml_round_trip(shop: Choreography) -> None:
    """Both text forms load back to the same document."""
    document = to_asyncapi(shop)
    assert json.loads(dump_asyncapi(document, "json")) == document
    assert yaml.safe_load(dump_asyncapi(document, "yaml")) == document
    assert dump_asyncapi(document).startswith("asyncapi: 3.0.0\n")
    with pytest.raises(ConfigurationError, match="unknown AsyncAPI format 'xml'"):
        dump_asyncapi(document, "xml")


def test_broken_choreographies_still_export() -> None:
    """Every fixture, broken or not, exports a structurally valid document."""
    for name in ("broken_never_emitted", "broken_unhandled_failure", "chained"):
        graph = discover(f"fixtures.choreographies.{name}").choreography()
        assert_asyncapi3(to_asyncapi(graph))
