"""``python -m gateway.providers.simulated``: the same server as ``python -m gateway.simulator``."""

import sys

from gateway.simulator.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
