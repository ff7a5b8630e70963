"""Export a choreography as an AsyncAPI 3.0.0 document (a dict; JSON or YAML text).

The document describes the choreography as Kafka sees it:

- ``channels``: one per topic (the topic of an event type comes from a
  :data:`~choreo.model.topics.TopicNaming` function, by default
  :func:`choreo.model.topics.topic_for`: the event type's full name), listing the
  messages that travel on it, with a Kafka channel binding;
- ``operations``: per handler, one ``receive`` for each topic it consumes from and one
  ``send`` for each topic it emits to (and a ``send`` for each service that opens a saga),
  tagged with the service name and carrying the step id and kind in ``x-choreo-step`` and
  ``x-choreo-kind``;
- ``components.messages``: one per event type, with choreo's envelope headers as a JSON
  Schema, the correlation id's location (``$message.header#/choreo-correlation-id``), the
  Kafka key (the correlation id), the event's role per saga in ``x-choreo-roles``, and,
  when schemas are given, the Avro schema as the payload
  (``schemaFormat: application/vnd.apache.avro;version=1.9.0``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from choreo._extras import require
from choreo.avro.lookup import avro_schema_of, resolve_schemas
from choreo.choreography.graph import Choreography
from choreo.choreography.service import HandlerSpec
from choreo.errors import ConfigurationError
from choreo.model.envelope import Header, Role
from choreo.model.events import event_type_of
from choreo.model.topics import TopicNaming, topic_for

__all__ = [
    "ASYNCAPI_VERSION",
    "AVRO_SCHEMA_FORMAT",
    "CONTENT_TYPE",
    "ENVELOPE_SCHEMA_ID",
    "dump_asyncapi",
    "envelope_headers_schema",
    "to_asyncapi",
]

logger = logging.getLogger(__name__)

ASYNCAPI_VERSION: Final = "3.0.0"
AVRO_SCHEMA_FORMAT: Final = "application/vnd.apache.avro;version=1.9.0"
CONTENT_TYPE: Final = "avro/binary"
"""The content type of a payload (Avro binary, as the Avro specification names it)."""
KAFKA_BINDING_VERSION: Final = "0.5.0"

_HEADER_DOCS: dict[str, tuple[str, bool]] = {
    # header: (description, required)
    Header.EVENT_TYPE: ("The event type: the Avro full name of the payload's schema.", True),
    Header.EVENT_ID: ("The event id (a UUID): the idempotency key.", True),
    Header.CORRELATION_ID: ("The saga's correlation id (also the record key).", True),
    Header.CAUSATION_ID: ("The id of the event that caused this one.", False),
    Header.SAGA: ("The saga's name.", True),
    Header.ROLE: ("The event's role in its saga.", True),
    Header.STEP: (
        "The step (service.handler) that produced it, or that a compensation undid.",
        False,
    ),
    Header.SERVICE: ("The producing service.", True),
    Header.PRODUCED_AT: ("When it was produced, in milliseconds since the epoch (decimal).", True),
    Header.TRACEPARENT: ("W3C trace context, when tracing is on.", False),
}


ENVELOPE_SCHEMA_ID: Final = "ChoreoEnvelopeHeaders"
"""The key of the envelope headers' JSON Schema in ``components.schemas``."""


def envelope_headers_schema() -> dict[str, Any]:
    """Return the JSON Schema of choreo's record headers (every value is UTF-8 text)."""
    properties: dict[str, Any] = {}
    for name, (description, _required) in _HEADER_DOCS.items():
        properties[name] = {"type": "string", "description": description}
    properties[Header.ROLE]["enum"] = [r.value for r in Role]
    properties[Header.PRODUCED_AT]["pattern"] = "^[0-9]+$"
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name, (_d, required) in _HEADER_DOCS.items() if required],
    }


def _message_headers(event_type: str, roles: tuple[Role, ...]) -> dict[str, Any]:
    """Return the headers schema of one message: the envelope's, with type and role pinned."""
    pinned: dict[str, Any] = {Header.EVENT_TYPE: {"const": event_type}}
    if roles:
        pinned[Header.ROLE] = {"enum": [r.value for r in roles]}
    return {
        "allOf": [
            {"$ref": _pointer("components", "schemas", ENVELOPE_SCHEMA_ID)},
            {"type": "object", "properties": pinned},
        ]
    }


def _pointer(*parts: str) -> str:
    """Return a JSON pointer fragment (``#/a/b``) with each part escaped (RFC 6901)."""
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _simple(event_type: str) -> str:
    return event_type.rpartition(".")[2]


def to_asyncapi(
    choreography: Choreography,
    schemas: object | None = None,
    *,
    title: str = "choreo choreography",
    version: str = "1.0.0",
    description: str | None = None,
    topic_naming: TopicNaming | None = None,
    bootstrap: str | None = None,
) -> dict[str, Any]:
    """Return ``choreography`` as an AsyncAPI 3.0.0 document (plain JSON values).

    ``schemas`` (a registry, a mapping of full name -> Avro schema, or a directory of
    ``.avsc`` files) fills each message's payload; an event without a schema gets no
    payload. ``topic_naming`` maps an event type to its topic; ``bootstrap``
    (``host:port``) adds a Kafka server.
    """
    naming = topic_naming or topic_for
    source = resolve_schemas(schemas) if schemas is not None else None
    sagas_by_event = {t: choreography.sagas_of(t) for t in choreography.event_types}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    topic_of: dict[str, str] = {}
    for event_type in choreography.event_types:
        topic = naming(event_type)
        topic_of[event_type] = topic
        messages[event_type] = _message(choreography, event_type, sagas_by_event, source)
        channel = channels.setdefault(
            topic,
            {
                "address": topic,
                "messages": {},
                "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
            },
        )
        channel["messages"][event_type] = {"$ref": _pointer("components", "messages", event_type)}
    operations: dict[str, Any] = {}
    for spec in choreography.handlers:
        _add_operations(operations, spec, "receive", spec.consumed_types, topic_of)
        _add_operations(operations, spec, "send", spec.emitted_types, topic_of)
    for service in choreography.services:
        for saga in service.started_sagas:
            start = event_type_of(saga.start)
            topic = topic_of[start]
            operations[f"{service.start_step_id(saga)}.send.{saga.name}"] = {
                "action": "send",
                "channel": {"$ref": _pointer("channels", topic)},
                "messages": [{"$ref": _pointer("channels", topic, "messages", start)}],
                "summary": f"{service.name} opens saga {saga.name} with {_simple(start)}",
                "tags": [{"name": service.name}],
                "x-choreo-step": service.start_step_id(saga),
                "x-choreo-kind": "start",
            }
    info: dict[str, Any] = {"title": title, "version": version}
    info["description"] = description or _describe(choreography)
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "defaultContentType": CONTENT_TYPE,
    }
    if bootstrap:
        document["servers"] = {
            "kafka": {"host": bootstrap, "protocol": "kafka", "description": "Kafka bootstrap"}
        }
    document["channels"] = channels
    document["operations"] = operations
    document["components"] = {
        "schemas": {ENVELOPE_SCHEMA_ID: envelope_headers_schema()},
        "messages": messages,
    }
    logger.debug(
        "asyncapi: %d channels, %d operations, %d messages",
        len(channels),
        len(operations),
        len(messages),
    )
    return document


def _describe(choreography: Choreography) -> str:
    sagas = ", ".join(s.name for s in choreography.sagas) or "none"
    services = ", ".join(s.name for s in choreography.services) or "none"
    return f"Services: {services}. Sagas: {sagas}. Generated by choreo."


def _add_operations(
    operations: dict[str, Any],
    spec: HandlerSpec,
    action: str,
    event_types: tuple[str, ...],
    topic_of: Mapping[str, str],
) -> None:
    by_topic: dict[str, list[str]] = {}
    for event_type in event_types:
        by_topic.setdefault(topic_of[event_type], []).append(event_type)
    verb = "consumes" if action == "receive" else "emits"
    for topic, types in by_topic.items():
        operations[f"{spec.step_id}.{action}.{topic}"] = {
            "action": action,
            "channel": {"$ref": _pointer("channels", topic)},
            "messages": [{"$ref": _pointer("channels", topic, "messages", t)} for t in types],
            "summary": f"{spec.step_id} ({spec.kind.value}) {verb} "
            + ", ".join(_simple(t) for t in types),
            "tags": [{"name": spec.service}],
            "x-choreo-step": spec.step_id,
            "x-choreo-kind": spec.kind.value,
        }


def _roles(
    choreography: Choreography, event_type: str, sagas_by_event: Mapping[str, Any]
) -> dict[str, str]:
    """Return an event type's role per saga, or under ``*`` when no saga declares it."""
    roles: dict[str, str] = {}
    for saga in sagas_by_event[event_type]:
        role = choreography.role_in(event_type, saga.name)
        if role is not None:
            roles[saga.name] = role.value
    if not roles:
        role = choreography.role_in(event_type)
        if role is not None:
            roles["*"] = role.value
    return roles


def _first_doc_line(cls: type | None) -> str:
    """Return the first line of a class's docstring, or "" when it has none."""
    if cls is None or not cls.__doc__:
        return ""
    lines = cls.__doc__.strip().splitlines()
    return lines[0] if lines else ""


def _message(
    choreography: Choreography,
    event_type: str,
    sagas_by_event: Mapping[str, Any],
    schemas: object | None,
) -> dict[str, Any]:
    roles = _roles(choreography, event_type, sagas_by_event)
    role_values = tuple(dict.fromkeys(Role(r) for r in roles.values()))
    doc = _first_doc_line(choreography.event_class(event_type))
    message: dict[str, Any] = {
        "name": _simple(event_type),
        "title": _simple(event_type),
        "summary": doc or f"{event_type} ({', '.join(r.value for r in role_values) or 'event'})",
        "contentType": CONTENT_TYPE,
        "correlationId": {
            "description": "The saga's correlation id.",
            "location": f"$message.header#/{Header.CORRELATION_ID}",
        },
        "headers": _message_headers(event_type, role_values),
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The saga's correlation id."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "tags": [{"name": saga.name} for saga in sagas_by_event[event_type]],
        "x-choreo-event-type": event_type,
        "x-choreo-roles": roles,
    }
    if schemas is not None:
        schema = avro_schema_of(schemas, event_type)
        if schema is not None:
            message["payload"] = {"schemaFormat": AVRO_SCHEMA_FORMAT, "schema": schema}
        else:
            logger.warning("asyncapi: no schema for %s; its message has no payload", event_type)
    if not message["tags"]:
        del message["tags"]
    return message


def dump_asyncapi(document: Mapping[str, Any], fmt: str = "yaml") -> str:
    """Return ``document`` as YAML (``fmt="yaml"``, needs PyYAML) or JSON text."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt != "yaml":
        raise ConfigurationError(f"unknown AsyncAPI format {fmt!r}; use 'yaml' or 'json'")
    yaml = require("yaml", "yaml", "AsyncAPI as YAML (or --format json)")
    text: str = yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=100)
    return text
