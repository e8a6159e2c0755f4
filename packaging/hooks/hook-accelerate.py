"""accelerate (not covered by pyinstaller-hooks-contrib): ``accelerate.utils`` checks package
versions through importlib.metadata at import."""

from PyInstaller.utils.hooks import copy_metadata

datas = copy_metadata("accelerate", recursive=True)

# Not excluding ``accelerate.commands`` (the CLI), though the engine never runs it:
# ``accelerate.utils.other`` imports ``commands.config.default`` at import time, and without it the
# frozen engine failed with a misleading circular-import error from ``accelerate.big_modeling``.
