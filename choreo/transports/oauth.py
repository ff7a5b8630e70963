"""SASL/OAUTHBEARER tokens for kafka-python, from the same settings librdkafka reads.

librdkafka (confluent-kafka) gets its tokens itself from ``sasl.oauthbearer.config``
(an unsecured token, for test clusters) or, with ``sasl.oauthbearer.method=oidc``, from
an OIDC token endpoint with client credentials. kafka-python needs a token provider
object instead; :func:`token_provider` builds one from those settings, so one
configuration drives both clients. Tokens from an endpoint are cached until a minute
before they expire; the client secret never appears in a repr or an error.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

from kafka.net.sasl.oauth import AbstractTokenProvider

from choreo.errors import ConfigurationError, TransportError
from choreo.safety.redact import redact_url

__all__ = ["OidcTokenProvider", "UnsecuredTokenProvider", "token_provider"]

_TIMEOUT_S: Final = 10.0
_REFRESH_MARGIN_S: Final = 60.0
_MAX_RESPONSE: Final = 1_000_000


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class UnsecuredTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """An unsigned JWT naming ``principal`` (what a broker with unsecured OAUTHBEARER accepts)."""

    def __init__(self, principal: str, *, scope: str | None = None, life_s: int = 3600) -> None:
        """Issue tokens for ``principal`` valid ``life_s`` seconds."""
        self.principal = principal
        self.scope = scope
        self.life_s = life_s

    def token(self) -> str:
        """Return a fresh unsecured token."""
        now = int(time.time())
        claims: dict[str, Any] = {"sub": self.principal, "iat": now, "exp": now + self.life_s}
        if self.scope:
            claims["scope"] = self.scope
        return f"{_b64({'alg': 'none'})}.{_b64(claims)}."

    def __repr__(self) -> str:
        """Name the principal only."""
        return f"UnsecuredTokenProvider(principal={self.principal!r})"


class OidcTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """Tokens from an OIDC endpoint by the client-credentials grant, cached until expiry."""

    def __init__(
        self, endpoint: str, client_id: str, client_secret: str, *, scope: str | None = None
    ) -> None:
        """Ask ``endpoint`` for tokens as ``client_id``."""
        if not endpoint.startswith(("https://", "http://")):
            raise ConfigurationError(
                "sasl.oauthbearer.token.endpoint.url must be an http(s) URL"
            )
        self.endpoint = endpoint
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0

    def token(self) -> str:
        """Return a cached token, or fetch a new one when it expires within a minute."""
        with self._lock:
            if self._token is None or time.time() > self._expires - _REFRESH_MARGIN_S:
                self._token, life = self._fetch()
                self._expires = time.time() + life
            return self._token

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        basic = base64.b64encode(f"{self.client_id}:{self._secret}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.endpoint,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Authorization": f"Basic {basic}",
                     "Content-Type": "application/x-www-form-urlencoded"},
        )
        where = redact_url(self.endpoint)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310
                body = json.loads(response.read(_MAX_RESPONSE))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TransportError(
                f"cannot get an OAuth token from {where}: {exc}; check"
                " sasl.oauthbearer.token.endpoint.url and the client id and secret",
                retriable=True,
            ) from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise TransportError(f"the OAuth token endpoint {where} returned no access_token")
        life = body.get("expires_in", 300)
        return token, float(life) if isinstance(life, int | float) else 300.0

    def __repr__(self) -> str:
        """Name the endpoint and client id, never the secret."""
        endpoint = redact_url(self.endpoint)
        return f"OidcTokenProvider(endpoint={endpoint!r}, client_id={self.client_id!r})"


def _config_options(text: str) -> dict[str, str]:
    """Return the ``key=value`` pairs of ``sasl.oauthbearer.config``."""
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


def token_provider(settings: Mapping[str, object]) -> AbstractTokenProvider:
    """Return the kafka-python token provider for librdkafka-style OAUTHBEARER ``settings``.

    Raises :class:`ConfigurationError` saying which settings are missing.
    """
    method = str(settings.get("sasl.oauthbearer.method", "default")).lower()
    if method == "oidc":
        needed = ("sasl.oauthbearer.token.endpoint.url", "sasl.oauthbearer.client.id",
                  "sasl.oauthbearer.client.secret")
        missing = [name for name in needed if not settings.get(name)]
        if missing:
            raise ConfigurationError(f"OAUTHBEARER with OIDC needs {', '.join(missing)}")
        scope = settings.get("sasl.oauthbearer.scope")
        return OidcTokenProvider(
            *(str(settings[name]) for name in needed),
            scope=str(scope) if scope else None,
        )
    options = _config_options(str(settings.get("sasl.oauthbearer.config", "")))
    if "principal" not in options:
        raise ConfigurationError(
            "OAUTHBEARER needs sasl.oauthbearer.method=oidc with a token endpoint, client id"
            " and secret, or sasl.oauthbearer.config set to principal=<name> (unsecured,"
            " for tests)"
        )
    life = options.get("lifeSeconds", "3600")
    return UnsecuredTokenProvider(
        options["principal"],
        scope=options.get("scope"),
        life_s=int(life) if life.isdigit() else 3600,
    )
