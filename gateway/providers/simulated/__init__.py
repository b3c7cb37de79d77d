"""The simulated models' former home, kept so existing imports and launch commands still work.

The models now live in ``gateway.simulator``; import from there.
"""

from gateway.simulator import *  # noqa: F403
from gateway.simulator import __all__ as __all__
