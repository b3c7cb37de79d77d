"""Routing quality per shared file, in-domain, leave-one-domain-out and adapted:
``python -m benchmarks.routing_quality`` (see ``run.py``)."""
