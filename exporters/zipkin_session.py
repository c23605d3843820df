"""The HTTP session Zipkin batches are POSTed with (requests), made by the export thread."""

from __future__ import annotations

import requests

__all__ = ["zipkin_session"]


def zipkin_session(endpoint: str) -> requests.Session:
    """A session for `endpoint` sending JSON, as the SDK's Zipkin exporter sets it up.

    Proxy settings from the environment are read once here: by default `requests` re-reads
    them, and looks for a .netrc file, on every POST, on a thread that shares the GIL.
    """
    session = requests.Session()
    session.headers.update({"Content-Type": "application/json"})
    session.proxies = requests.utils.get_environ_proxies(endpoint)
    session.trust_env = False
    return session
