"""Personalisation training: one loop (loop.py), four methods (methods.py), caches (data.py), checkpoints, exports."""
