"""Array types of the router, named by dtype so signatures say what a function reads and returns.

Annotations only: nothing here converts at run time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

F16 = NDArray[np.float16]
F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
Floats = NDArray[np.floating[Any]]  # any float width: arrays read from an artifact, before .astype
I64 = NDArray[np.int64]
Ints = NDArray[np.integer[Any]]  # indices and counts of any integer width
U8 = NDArray[np.uint8]
U64 = NDArray[np.uint64]
Bools = NDArray[np.bool_]
Strs = NDArray[np.str_]
# Arrays as np.load gives them: dtype known only from the file.
Loaded = NDArray[Any]
NpzArrays = dict[str, Loaded]  # the arrays of router.npz, by name
