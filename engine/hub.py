"""Is the Hugging Face Hub reachable? Asked once per process, so an offline machine fails in a second.

Without this check, transformers and datasets retry for most of a minute before they give up. When the Hub
cannot be reached, loads go local-only: models and datasets already in the local cache still load.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


def _offline_env() -> bool:
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.cache
def _can_connect(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is set or the Hub's host cannot be reached (cached per process)."""
    if _offline_env():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return _can_connect(endpoint.hostname or "huggingface.co", endpoint.port or 443, timeout)


@contextlib.contextmanager
def datasets_offline_unless_reachable() -> Iterator[None]:
    """Make ``datasets.load_dataset`` use only its local cache while the Hub is unreachable."""
    import datasets.config

    if hub_reachable():
        yield
        return
    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved
