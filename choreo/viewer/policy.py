"""What the viewer accepts and sends: security headers, the Host check, id parameters.

Every response carries a strict Content-Security-Policy, ``nosniff`` and ``no-referrer``;
a request whose ``Host`` header is not the address served is refused (a DNS-rebinding
page cannot talk to the viewer through a name of its own); ids come as bounded query
parameters.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final

from choreo.viewer.api import BadQueryError

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
"""The Content-Security-Policy sent with every response."""

SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
"""Headers sent with every response, errors included."""


MAX_ID_CHARS: Final = 1024
"""The longest correlation or event id accepted in a request."""
_LOOPBACK_NAMES: Final = frozenset({"localhost"})
_ALLOWED_METHODS: Final = "GET, HEAD"


def _is_ip(text: str) -> bool:
    """Return True when ``text`` is an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Return True when ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host_header(value: str) -> tuple[str, int | None] | None:
    """Return (host, port) of a ``Host`` header value, or None when it is malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, rest = value, ""
        else:
            rest = ":" + port_text
    if not rest:
        return host.lower(), None
    if not rest.startswith(":") or not rest[1:].isdigit():
        return None
    return host.lower(), int(rest[1:])


class HostPolicy:
    """Decides which ``Host`` headers name this server (DNS-rebinding protection).

    Accepted: the bound host with the bound port; for a loopback bind also ``localhost``
    and other loopback literals; for a wildcard bind (``0.0.0.0``/``::``) any address
    literal, since a rebinding attack needs a domain name of its own; plus the names in
    ``extra``. The port must always be the bound port.
    """

    def __init__(self, host: str, port: int, extra: Iterable[str] = ()) -> None:
        """Accept ``host:port`` and the names described above."""
        self.host = host.lower()
        self.port = port
        self.extra = frozenset(name.lower() for name in extra)
        self.wildcard = host in ("0.0.0.0", "::", "")  # noqa: S104 - comparing, not binding

    def allows(self, header: str | None) -> bool:
        """Return True when the ``Host`` header value names this server."""
        if not header:
            return False
        parsed = _split_host_header(header)
        if parsed is None:
            return False
        host, port = parsed
        if port != self.port:
            return False
        if host == self.host or host in self.extra:
            return True
        if self.wildcard:
            return _is_ip(host) or host in _LOOPBACK_NAMES
        return is_loopback(self.host) and is_loopback(host)


def _id_param(query: Mapping[str, str], name: str) -> str:
    """Return the id in query parameter ``name``; raise BadQueryError when missing or long."""
    value = query.get(name)
    if not value:
        raise BadQueryError(f"give the id as the {name!r} query parameter")
    if len(value) > MAX_ID_CHARS:
        raise BadQueryError(f"{name} must be at most {MAX_ID_CHARS} characters")
    return value
