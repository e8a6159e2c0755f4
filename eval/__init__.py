"""Measurements of the project's own evaluators (run as ``python -m eval.<name>``)."""
