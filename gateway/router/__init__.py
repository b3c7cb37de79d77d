"""The complexity router: per-prompt difficulty and P(good answer) per model.

Serving needs numpy + stdlib only; training (``gateway.router.training.train``) also uses scipy.
"""

from gateway.router.model import DEFAULT_ARTIFACT, Assessment, Router, load_router

__all__ = ["DEFAULT_ARTIFACT", "Assessment", "Router", "load_router"]
