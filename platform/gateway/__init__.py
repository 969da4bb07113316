"""The OpenAI-compatible HTTP gateway: puts requests on Redis streams, streams results back.

It holds no model and never imports torch; see `create_app`.
"""

from pagefleet.platform.gateway.app import create_app
from pagefleet.platform.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
