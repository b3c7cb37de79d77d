"""HTTP surface: OpenAI schemas in, OpenAI schemas out, OpenAI-style errors."""

from gateway.api.app import create_app

__all__ = ["create_app"]
