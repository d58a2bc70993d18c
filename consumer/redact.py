"""Secrets out of every log line and error message.

Three nets, all cheap: credentials inside any URL (``scheme://user:password@host`` becomes
``scheme://user:***@host``), the exact values of the settings that are secrets (SASL and SSL
passwords, registry credentials, ...), registered once at start, and inside free text the value
of an assignment to a name that names a secret (``sasl.password=...``, ``"token": "..."``), as
an exception message may echo a configuration or a payload. Values under keys that name a secret
(``password``, ``secret``, ``token``, ...) are replaced whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

MASK = "***"

_URL_CREDENTIALS = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s\"'<>]*):[^@/\s\"'<>]*@")

SECRET_NAME = re.compile(
    r"password|passwd|secret|token|credential|user[._]?info|jaas|api[._]?key|private[._]?key"
    r"|\.pem$|oauthbearer\.config", re.IGNORECASE)
"""Setting names (librdkafka keys, environment variables, log keys) whose values are secrets."""

_SECRET_ASSIGNMENT = re.compile(
    r"(?P<head>[\w.-]*(?:password|passwd|secret|token|credential|api[._-]?key)[\w.-]*[\"']?"
    r"\s*[=:]\s*[\"']?)[^\s\"',;&)}\]]+", re.IGNORECASE)
"""``<secret name> = value`` or ``"<secret name>": "value"`` inside text: the value is masked."""

_MIN_SECRET_LENGTH = 3
"""Shorter values are not replaced inside text: masking every ``a`` would garble the line."""


class Redactor:
    """Masks URL credentials and the registered secret values in text and log events."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, values: Iterable[str]) -> None:
        """Register secret values; the longest are masked first, so none leaves a tail."""
        known = set(self._secrets)
        known.update(v for v in values if len(v) >= _MIN_SECRET_LENGTH)
        self._secrets = sorted(known, key=len, reverse=True)

    def text(self, text: str) -> str:
        if "@" in text:
            text = _URL_CREDENTIALS.sub(rf"\g<head>:{MASK}@", text)
        if "=" in text or ":" in text:
            text = _SECRET_ASSIGNMENT.sub(rf"\g<head>{MASK}", text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if depth > 4:
            return value
        if isinstance(value, Mapping):
            return {k: MASK if isinstance(k, str) and SECRET_NAME.search(k) and v
                    else self.value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v, depth + 1) for v in value)
        return value

    def __call__(self, logger: Any, method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """A structlog processor: run it after ``format_exc_info`` and before the renderer."""
        for key, value in event_dict.items():
            if SECRET_NAME.search(key) and value:
                event_dict[key] = MASK
            elif isinstance(value, str | Mapping | list | tuple):
                event_dict[key] = self.value(value)
        return event_dict


REDACTOR = Redactor()
"""The process's redactor: the logging pipeline and the CLI's error lines use it."""


def redact(text: str) -> str:
    """``text`` with URL credentials and registered secrets masked."""
    return REDACTOR.text(text)


def url_without_credentials(url: str) -> tuple[str, str | None]:
    """``http://user:pass@host/p`` -> (``http://host/p``, ``user:pass``), still percent-encoded."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, None
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return url, None
    return f"{scheme}://{host}{slash}{path}", userinfo
