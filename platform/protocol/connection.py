"""How every part reaches Redis: the one default URL and the one check of a URL.

The gateway, the controller and the workers each take a `redis_url`; keeping the default and
the accepted schemes here means a local run and a misconfigured deployment behave the same way
on every side.
"""

from __future__ import annotations

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_SCHEMES = ("redis://", "rediss://", "unix://")


def check_redis_url(url: str) -> None:
    """Raise `ValueError` unless `url` is one redis-py's `from_url` understands."""
    if not url.startswith(_SCHEMES):
        raise ValueError(f"redis_url must be a redis:// URL, got {url!r}")
