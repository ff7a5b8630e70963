"""Checking a PostgreSQL URL before use, and saying why a connection failed, without its password.

A store URL reaches choreo from ``--store``, ``$CHOREO_STORE`` or Python, and its
password must never show in an error, a repr or a log line. Three things could leak it:

- a password with an unencoded ``@`` or ``/`` (``postgresql://app:p@ss@db/shop``): URL
  parsers then take part of the password for the host or the path, no redaction can
  tell which part was secret, and libpq repeats that "host" in its error ("failed to
  resolve host 'ss@db'"). :func:`check_url` refuses such a URL without echoing it;
- libpq's and psycopg_pool's own messages: :func:`register_url_password` registers the
  password with :mod:`choreo.safety.redact`, whose filter covers the ``psycopg`` loggers;
- choreo's error messages: :func:`connection_failure` gives libpq's reason (a refused
  login, a refused connection, an unknown database…), redacted and bounded, with a hint.

Also here, as a question about the installed client: :func:`send_ahead_api`, whether
this psycopg has the calls the store uses to send a handler's next savepoint ahead.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote

from choreo.errors import ConfigurationError
from choreo.safety.redact import redact_text, register_secret

__all__ = ["check_url", "connection_failure", "register_url_password", "send_ahead_api"]

_MAX_REASON_CHARS: Final = 300

_HINTS: Final = (
    (
        "password authentication failed",
        "check the user and password (percent-encoded in the URL, or from $PGPASSWORD "
        "or ~/.pgpass, which keep it off the command line)",
    ),
    ("no password supplied", "give a password: $PGPASSWORD, ~/.pgpass or the URL"),
    ("does not exist", "create the database or role first (createdb, CREATE ROLE)"),
    ("timeout expired", "the server did not answer: check the host, port and firewall"),
)


def _authority(url: str) -> str | None:
    """Return the part of ``url`` between ``://`` and the query (None for a conninfo string)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        return None
    return rest.split("?", 1)[0]


def check_url(url: str) -> None:
    """Raise ConfigurationError, without echoing ``url``, when its password is not percent-encoded.

    An ``@`` or ``/`` inside the user or password must be written ``%40`` / ``%2F``;
    otherwise the URL names another host than the user meant and part of the password
    would show in errors. Conninfo strings (``host=… password=…``) are not checked.
    """
    rest = _authority(url)
    if rest is None or "@" not in rest:
        return
    userinfo = rest[: rest.rindex("@")]
    if "@" in userinfo or "/" in userinfo:
        raise ConfigurationError(
            "the PostgreSQL URL's user or password holds an unencoded '@' or '/': "
            "percent-encode it (@ as %40, / as %2F, : as %3A), or leave the password out "
            "of the URL and set $PGPASSWORD or ~/.pgpass (the URL is not shown: it holds "
            "a password)"
        )


def register_url_password(url: str) -> None:
    """Register the password of ``url`` (decoded and as written) for redaction everywhere."""
    rest = _authority(url)
    if rest is None or "@" not in rest:
        return
    userinfo = rest[: rest.rindex("@")]
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        register_secret(password)
        register_secret(unquote(password))


def connection_failure(exc: BaseException, shown_url: str, what: str = "connect to") -> str:
    """Return "cannot <what> PostgreSQL at <shown_url>: <libpq's reason>[; <hint>]".

    ``shown_url`` must already be redacted; the reason is redacted again, flattened to
    one line and bounded to 300 characters, and a hint says what to check for the common
    failures (a refused login, a refused connection, a missing database or role).
    """
    reason = " ".join(str(exc).split()) or type(exc).__name__
    reason = redact_text(reason)
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 1] + "…"
    lowered = reason.lower()
    hint = next((text for marker, text in _HINTS if marker in lowered), "")
    return f"cannot {what} PostgreSQL at {shown_url}: {reason}" + (f"; {hint}" if hint else "")


def send_ahead_api(psycopg: Any) -> Any:
    """Return psycopg's ``generators`` module when this psycopg has every call the savepoint
    sent ahead uses (``generators.send``/``fetch_many``, ``Connection.wait``,
    ``errors.error_from_result``: psycopg 3.1 to 3.3 have them, though not as documented
    API), else None: the store then opens each savepoint with a plain round trip."""
    try:
        from psycopg import generators
    except ImportError:  # pragma: no cover - depends on the psycopg version
        return None
    needed = (
        hasattr(generators, "send"),
        hasattr(generators, "fetch_many"),
        hasattr(psycopg.Connection, "wait"),
        hasattr(psycopg.errors, "error_from_result"),
    )
    return generators if all(needed) else None
