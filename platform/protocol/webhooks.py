"""Job webhooks: where they may go, how they are signed, and where pending ones are scheduled.

Targets: a webhook fired by a worker inside the cluster must not become a way to reach the
cluster's private services (SSRF), so a URL whose host resolves to any private, loopback,
link-local, multicast, reserved or unspecified address is refused unless the operator allows
private targets. The gateway calls the same check when a job is created (a 400 then), the
worker again before each POST (DNS may have changed since).

Signing follows Standard Webhooks: `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. A secret of the form
`whsec_<base64>` is used as the decoded bytes, any other string as its UTF-8 bytes.
Torch-free and I/O-free except for the resolver, which callers can replace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

WEBHOOK_SCHEDULE = "pf:webhooks"  # zset: job id -> time of its next delivery attempt
Resolver = Callable[[str], list[str]]


class WebhookTargetRefused(ValueError):
    """The webhook URL is malformed or points at an address the settings do not allow."""


def resolve_host(host: str) -> list[str]:
    """Every address `host` resolves to (blocking: call it in a thread from async code)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookTargetRefused(f"webhook host {host!r} does not resolve: {exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified or not ip.is_global)


def check_webhook_target(url: str, allow_private: bool = False,
                         resolve: Resolver = resolve_host) -> None:
    """Raise `WebhookTargetRefused` unless `url` is http(s) with a host whose every address
    is public (or `allow_private`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookTargetRefused("webhook must be an http:// or https:// URL with a host")
    if allow_private:
        return
    addresses = resolve(parts.hostname)
    if not addresses:
        raise WebhookTargetRefused(f"webhook host {parts.hostname!r} has no address")
    refused = [a for a in addresses if not _public(a)]
    if refused:
        raise WebhookTargetRefused(
            f"webhook host {parts.hostname!r} resolves to a non-public address ({refused[0]}); "
            "private targets are not allowed")


def webhook_target_allowed(url: str, allow_private: bool = False,
                           resolve: Resolver = resolve_host) -> bool:
    try:
        check_webhook_target(url, allow_private, resolve)
    except WebhookTargetRefused:
        return False
    return True


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(secret: str | None, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers (the signature only when a secret is configured)."""
    headers = {"content-type": "application/json", "webhook-id": msg_id,
               "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = webhook_signature(secret, msg_id, timestamp, body)
    return headers
