"""Credentials out of anything ragc prints or logs: one masking rule for every URL and DSN."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["redact"]

_URL_PASSWORD: Final = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^/@\s:]*:)[^\s]*(?=@)", re.I)
_KV_PASSWORD: Final = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.I)


def redact(text: str) -> str:
    """``text`` with every password replaced by ``***``: in URLs
    (``redis://:secret@host``, ``postgresql://user:secret@host/db``) and in ``key=value`` DSNs
    and query strings (``password=secret``)."""
    return _KV_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>***", text))
