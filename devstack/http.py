"""Loopback HTTP for development stacks: the simulators' admin endpoints, a gateway's metrics page.

Blocking (urllib); from asyncio code call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def http_get(url: str, timeout: float = 5.0) -> bytes:
    """The body of ``GET url``."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        body: bytes = reply.read()
        return body


def http_json(url: str, payload: Any = None, timeout: float = 30.0) -> Any:
    """GET ``url`` (or POST ``payload`` as JSON) and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())
