"""What users may import from `gateway`: this list is the public surface; everything else is internal."""

from __future__ import annotations

import gateway

PUBLIC = ["GatewayConfig", "__version__", "create_app", "load_config"]


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(gateway.__all__) == sorted(PUBLIC)


def test_every_public_name_can_be_imported() -> None:
    for name in PUBLIC:
        assert getattr(gateway, name) is not None
    from gateway import GatewayConfig, create_app, load_config  # noqa: F401  (the way users write it)

