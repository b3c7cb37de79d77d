"""One model, many spellings: the key under which the router matches a model name it was not
trained on to one it was.

The same model is published as ``Meta-Llama-3.1-8B-Instruct`` (its card),
``meta-llama/Llama-3.1-8B-Instruct`` (a hub id), ``llama-3.1-8b-instruct`` (a provider's
catalogue) and ``together_ai/meta-llama/...`` (a litellm route). A head learned for one of them
ranks a pair of models on traffic the router never saw better than its difficulty does
(benchmarks/results/routing_quality.md), so a deployment or a data file naming the model
another way should still get it. The key only drops what never tells two models apart: case,
the route or organisation before the last ``/``, ``_`` versus ``-``, the ``Meta-`` before
``Llama`` and the ``-hf`` of a converted checkpoint. Sizes, versions, dates and tuning suffixes
(``-instruct``, ``-chat``, ``-0613``) stay: they are different models.
"""

from __future__ import annotations

import re
from functools import lru_cache

_SEPARATORS = re.compile(r"[\s_]+")


@lru_cache(maxsize=4096)  # asked per candidate plan on every request for an unknown profile
def model_key(name: str) -> str:
    """The spelling-independent key of a model name (see the module's docstring)."""
    key = _SEPARATORS.sub("-", name.strip().lower().rsplit("/", 1)[-1])
    if key.startswith("meta-llama"):
        key = key.removeprefix("meta-")
    return key.removesuffix("-hf")
