"""One redaction layer for secrets: configuration reprs, error messages and log records.

A setting is secret when its name says so (:func:`is_secret`): every password, private
key, key password, token, OAuth configuration and client secret of librdkafka
(confluent-kafka), kafka-python and the schema registry client, in their own spelling
(``sasl.password``, ``sasl_plain_password``, ``ssl.key.pem``, ``sasl.oauthbearer.config``,
``basic.auth.user.info``, ``bearer.auth.token``, ...) or Java's (``sasl.jaas.config``).

Three things hide them:

- :func:`redact_settings` masks the values of secret settings (for reprs);
- :func:`redact_text` removes every secret value it was told about
  (:func:`register_secret`; choreo registers each secret setting it is given), the value
  after any ``secret-name=``/``'secret_name': `` in text, and the password of any URL
  (``https://user:pass@host``);
- :class:`RedactingFilter`, installed by :func:`install_log_redaction` on choreo's,
  kafka-python's, confluent-kafka's and psycopg's loggers (and on any logger created
  later under those names), rewrites each log record, traceback included, with
  :func:`redact_text`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "MASK",
    "REDACTED_LOGGERS",
    "RedactingFilter",
    "install_log_redaction",
    "is_secret",
    "redact_settings",
    "redact_text",
    "redact_url",
    "register_secret",
    "register_settings",
]

MASK: Final = "***"
"""What a secret value is replaced by."""

REDACTED_LOGGERS: Final = ("choreo", "kafka", "confluent_kafka", "psycopg")
"""The loggers (and their descendants) whose records are redacted."""

SECRET_SETTINGS: Final = frozenset(
    {
        # librdkafka / confluent-kafka
        "sasl.password",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.oauthbearer.assertion.private.key.pem",
        "sasl.oauthbearer.assertion.jwt.template.file",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl_key",
        "ssl.keystore.password",
        "ssl.truststore.password",
        "ssl.engine.callback.data",
        # kafka-python
        "sasl.plain.password",
        "ssl.password",
        "sasl.oauth.token.provider",
        # Java clients
        "sasl.jaas.config",
        "ssl.keystore.key",
        # schema registry (confluent-kafka's client and Java's)
        "basic.auth.user.info",
        "schema.registry.basic.auth.user.info",
        "bearer.auth.token",
        "bearer.auth.client.secret",
        "bearer.auth.credential",
    }
)
"""Secret settings by name, normalised (lower case, ``_`` and ``-`` as ``.``)."""

_MARKERS: Final = ("password", "secret", "token", "credential", "passphrase", "jaas",
                   "private.key", "key.pem", "user.info")
_MIN_SECRET_CHARS: Final = 4
"""Shorter registered values are not searched for (they would mask ordinary words)."""

_SECRET_NAME: Final = re.compile(
    r"password|secret|token|credential|passphrase|jaas|user[._]info"
    r"|key[._]pem|ssl[._]key|oauthbearer[._]config",
    re.IGNORECASE,
)
"""What makes a setting's name in text secret (anywhere in the name)."""
# name= or name: (the name optionally quoted, as in dict reprs, properties, logs). A name is
# a whole run of name characters (the look-behind, the possessive ++), so text is scanned
# in linear time whatever it holds; whether the name is secret is decided in Python.
_PAIR_NAME: Final = re.compile(
    r"""(?<![A-Za-z0-9_.\-])(['"]?)([A-Za-z0-9_.\-]++)(['"]?)(\s*+[=:]\s*+)"""
)
_VALUE: Final = re.compile(r"""'(?:[^'\\]|\\.)*+'|"(?:[^"\\]|\\.)*+"|[^\s,;)}\]]++""")
_URL_USERINFO: Final = re.compile(  # a scheme starts a run (the look-behind): linear time
    r"(?<![A-Za-z0-9+.\-])(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*+://)"
    r"(?P<user>[^:/@\s]*+):(?P<password>[^@/\s]++)@"
)


class _State:
    """The secrets registered so far and whether the record factory is installed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets: frozenset[str] = frozenset()
        self.installed = False


_STATE: Final = _State()


def _normal(name: str) -> str:
    return name.lower().replace("_", ".").replace("-", ".")


def is_secret(name: str) -> bool:
    """Return True when a setting named ``name`` (any client's spelling) holds a secret."""
    normal = _normal(name)
    return normal in SECRET_SETTINGS or any(marker in normal for marker in _MARKERS)


def register_secret(value: object) -> None:
    """Remember a secret value so :func:`redact_text` removes it wherever it appears.

    Strings shorter than four characters are not remembered; for a ``user:password``
    pair (basic auth) the password alone is remembered too.
    """
    if not isinstance(value, str) or len(value) < _MIN_SECRET_CHARS:
        return
    values = {value}
    if ":" in value:
        password = value.split(":", 1)[1]
        if len(password) >= _MIN_SECRET_CHARS:
            values.add(password)
    with _STATE.lock:
        _STATE.secrets = _STATE.secrets | values


def register_settings(settings: Mapping[str, object]) -> None:
    """Register the value of every secret setting in ``settings`` (see :func:`register_secret`)."""
    for name, value in settings.items():
        if is_secret(name):
            register_secret(value)
        elif isinstance(value, str) and _URL_USERINFO.search(value):
            match = _URL_USERINFO.search(value)
            if match is not None:
                register_secret(match.group("password"))


def redact_settings(settings: Mapping[str, object]) -> dict[str, object]:
    """Return a copy of ``settings`` with secret values masked and URL passwords removed."""
    shown: dict[str, object] = {}
    for name, value in settings.items():
        if is_secret(name) and value is not None:
            shown[name] = MASK
        elif isinstance(value, str):
            shown[name] = redact_url(value)
        else:
            shown[name] = value
    return shown


def redact_url(text: str) -> str:
    """Return ``text`` with the password of every ``scheme://user:password@`` replaced."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)


def _mask_pairs(text: str) -> str:
    """Return ``text`` with the value after every secret ``name=``/``name:`` masked."""
    parts: list[str] = []
    done = 0
    for match in _PAIR_NAME.finditer(text):
        if match.start() < done or not _SECRET_NAME.search(match.group(2)):
            continue
        value = _VALUE.match(text, match.end())
        if value is None:
            continue
        quote = value.group()[0] if value.group()[:1] in ("'", '"') else ""
        parts += [text[done : match.end()], quote, MASK, quote]
        done = value.end()
    return "".join(parts) + text[done:] if parts else text


def redact_text(text: str) -> str:
    """Return ``text`` with every registered secret, secret setting value and URL password
    replaced by ``***``."""
    secrets = _STATE.secrets
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _mask_pairs(text)
    return redact_url(text)


class RedactingFilter(logging.Filter):
    """Rewrites each log record (message, arguments and traceback) with :func:`redact_text`.

    Never drops a record. The message is formatted once here, so handlers see the
    redacted text only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it."""
        if getattr(record, "_choreo_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: show it and its arguments, redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        setattr(record, "_choreo_redacted", True)  # noqa: B010 - a private mark, not an API
        return True


_FILTER: Final = RedactingFilter()


def _covered(name: str, roots: Iterable[str]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def install_log_redaction(roots: Iterable[str] = REDACTED_LOGGERS) -> None:
    """Install the redacting filter on the ``roots`` loggers and every descendant.

    Loggers that exist get the filter; records of loggers created later under those
    names are redacted when they are made (through the log record factory). Safe to call
    any number of times.
    """
    roots = tuple(roots)
    manager = logging.Logger.manager
    for name in [*roots, *list(manager.loggerDict)]:
        if _covered(name, roots):
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
    with _STATE.lock:
        if _STATE.installed:
            return
        _STATE.installed = True
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _covered(record.name, roots):
                _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
