"""Subject2Subject compute engine (torch, diffusers). Never imports Qt."""

__version__ = "0.1.0"
