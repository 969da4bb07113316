"""Webhook targets (SSRF refusal) and Standard Webhooks signatures."""

from __future__ import annotations

import pytest

from pagefleet.platform.protocol.webhooks import (
    WebhookTargetRefused,
    check_webhook_target,
    webhook_headers,
    webhook_signature,
    webhook_target_allowed,
)


def _resolver(*addresses: str):
    return lambda host: list(addresses)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.5", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not webhook_target_allowed("https://hooks.example.com/x", resolve=_resolver(address))
    assert webhook_target_allowed("https://hooks.example.com/x", allow_private=True,
                                  resolve=_resolver(address))


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(WebhookTargetRefused, match=r"10\.0\.0\.1"):
        check_webhook_target("https://hooks.example.com/", resolve=_resolver("93.184.216.34", "10.0.0.1"))
    assert webhook_target_allowed("https://hooks.example.com/", resolve=_resolver("93.184.216.34"))


@pytest.mark.parametrize("url", ["ftp://example.com/", "http:///path", "not a url", "file:///etc/passwd"])
def test_malformed_urls_are_refused_even_when_private_is_allowed(url: str) -> None:
    assert not webhook_target_allowed(url, allow_private=True, resolve=_resolver("93.184.216.34"))


def test_literal_loopback_ip_is_refused_with_the_real_resolver() -> None:
    assert not webhook_target_allowed("http://127.0.0.1:8080/hook")
    assert not webhook_target_allowed("http://[::1]/hook")


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    signature = webhook_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                                  "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                                  b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_carry_a_signature_only_with_a_secret() -> None:
    assert "webhook-signature" not in webhook_headers(None, "job-1", 10, b"{}")
    headers = webhook_headers("s3cret", "job-1", 10, b"{}")
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("job-1", "10")
    assert headers["webhook-signature"] == webhook_signature("s3cret", "job-1", 10, b"{}")
