"""Switchyard: an adaptive model-routing inference gateway with an OpenAI-compatible API."""

from gateway.config import GatewayConfig, load_config

__version__ = "0.1.0"
__all__ = ["GatewayConfig", "__version__", "create_app", "load_config"]


def __getattr__(name: str) -> object:
    # The app pulls in FastAPI and friends; quick commands (route, policy check) should not pay for it.
    if name == "create_app":
        from gateway.api.app import create_app

        return create_app
    raise AttributeError(name)
