"""Subject2Subject desktop app: the GUI and the user CLI. Never imports torch or diffusers."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("subject2subject")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"
