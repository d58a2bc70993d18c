"""Bearer JWTs signed by a vendor's OIDC keys: Pub/Sub push tokens, Entra ID tokens for Event Grid.

The signature is checked against the issuer's JWKS (fetched from a configured URL, cached
``ttl_s``; an unknown ``kid`` refreshes it at most once per ``refresh_cooldown_s``), then the
issuer, the audience, expiry (with a small leeway), and the principal: for Google, ``email`` on
the allow-list with ``email_verified`` true (what the library does not check); for Entra, the
``azp``/``appid`` of the sending application when an allow-list is given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from consumer.ingest.keys import KeyCache
from consumer.ingest.request import Forbidden, Unauthenticated

GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
ALGORITHMS = ("RS256",)


def parse_jwks(raw: bytes) -> dict[str, Any]:
    """JWKS bytes -> ``kid`` -> public key (RSA keys only)."""
    doc = json.loads(raw)
    keys: dict[str, Any] = {}
    for jwk in doc["keys"]:
        if jwk.get("kty") != "RSA" or "kid" not in jwk:
            continue
        keys[str(jwk["kid"])] = jwt.PyJWK(jwk, algorithm="RS256").key
    if not keys:
        raise ValueError("no RSA keys in the JWKS")
    return keys


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What a verified token must say."""

    issuers: tuple[str, ...]
    audiences: tuple[str, ...]
    principal_claims: tuple[str, ...] = ("email",)
    """The first of these present names the principal."""
    allowed_principals: frozenset[str] = frozenset()
    """Empty: any principal of the issuer (Entra without an app allow-list)."""
    require_email_verified: bool = True


class JwtVerifier:
    def __init__(self, jwks_url: str, policy: TokenPolicy, keys: KeyCache[dict[str, Any]], *,
                 leeway_s: float = 30.0, refresh_cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.jwks_url = jwks_url
        self.policy = policy
        self.keys = keys
        self.leeway_s = leeway_s
        self.refresh_cooldown_s = refresh_cooldown_s
        self.clock = clock
        self._last_refresh = -1e18

    async def verify(self, headers: Mapping[str, str]) -> str:
        """The principal of the request's bearer token; Unauthenticated/Forbidden otherwise."""
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("no_credentials", "no bearer token")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("bad_token", "the bearer token is not a JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated("bad_token", f"token algorithm {header.get('alg')!r} not allowed")
        kid = str(header.get("kid", ""))
        keys = await self.keys.get(self.jwks_url)
        if kid not in keys and self.clock() - self._last_refresh > self.refresh_cooldown_s:
            self._last_refresh = self.clock()
            keys = await self.keys.get(self.jwks_url, refresh=True)
        key = keys.get(kid)
        if key is None:
            raise Unauthenticated("unknown_key", "token signed by a key the issuer does not list")
        p = self.policy
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(ALGORITHMS), audience=list(p.audiences),
                issuer=list(p.issuers), leeway=self.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("expired", "token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("wrong_audience", "token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("wrong_issuer", "token issuer not accepted") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("bad_signature", "token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("bad_token", f"token rejected: {type(exc).__name__}") from None
        if claims.get("iat", 0) > self.clock() + self.leeway_s:
            raise Unauthenticated("bad_token", "token issued in the future")
        principal = next((str(claims[c]) for c in p.principal_claims if c in claims), "")
        if p.require_email_verified and claims.get("email_verified") is not True:
            raise Forbidden("email_not_verified", "token email is not verified")
        if p.allowed_principals and principal not in p.allowed_principals:
            raise Forbidden("principal_not_allowed", "token principal is not on the allow-list")
        return principal or str(claims.get("sub", "unknown"))
