"""Secrets never leave the process: one redaction for every message, log line and saved file.

A storage URL may carry a password in three places: the user part (``postgresql://u:PW@host/db``),
the query string (``sqlite:///t.db?password=PW``) and libpq's keyword form (``host=h password=PW``).
:func:`redact` masks all three in any text; :func:`remember_secrets` records the passwords of a URL
the user gave, so that they are masked wherever they turn up later (an exception from a driver that
quotes the connection string its own way, say).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
SECRET_KEYS = ("password", "passwd", "pass", "pwd", "secret", "token", "api_key", "apikey",
               "access_token", "sslpassword", "sslkey_password")
_KEYS = "|".join(sorted(SECRET_KEYS, key=len, reverse=True))
# scheme://user:PASSWORD@host
_USER_PART = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<secret>[^@\s/]*)(?=@)")
# ?password=PW&... or ;password=PW
_QUERY = re.compile(rf"(?P<head>[?&;](?:{_KEYS})=)(?P<secret>[^&#\s'\"]*)", re.IGNORECASE)
# libpq keywords: password=PW, password = 'P W', password="PW"
_KEYWORD = re.compile(rf"(?P<head>(?<![\w?&;])(?:{_KEYS})\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s'\",;&]+)",
                      re.IGNORECASE)
_remembered: set[str] = set()
_guard = threading.Lock()


def _mask(match: re.Match) -> str:
    return match.group("head") + MASK


def redact(text: str) -> str:
    """``text`` with every password of a URL or keyword string masked, and every remembered
    secret replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    with _guard:
        remembered = sorted(_remembered, key=len, reverse=True)
    for secret in remembered:
        text = text.replace(secret, MASK)
    text = _USER_PART.sub(_mask, text)
    text = _QUERY.sub(_mask, text)
    return _KEYWORD.sub(_mask, text)


def secrets_of(url: str) -> list[str]:
    """The passwords a storage URL or libpq keyword string carries (raw and percent-decoded)."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        found.extend(v for k, v in parse_qsl(parts.query, keep_blank_values=False)
                     if k.lower() in SECRET_KEYS)
    except ValueError:
        pass
    for pattern in (_USER_PART, _QUERY, _KEYWORD):
        for match in pattern.finditer(url):
            value = match.group("secret").strip("'\"")
            if value:
                found.append(value)
    return sorted({v for s in found for v in (s, unquote(s)) if len(v) >= 3}, key=len, reverse=True)


def remember_secrets(url: str | None) -> None:
    """Mask the passwords of ``url`` in everything :func:`redact` sees from now on."""
    if url:
        with _guard:
            _remembered.update(secrets_of(url))


__all__ = ["MASK", "redact", "remember_secrets", "secrets_of"]
