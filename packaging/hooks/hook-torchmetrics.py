"""torchmetrics (not covered by pyinstaller-hooks-contrib): its optional backends are found with
lightning_utilities' RequirementCache, which reads importlib.metadata."""

from PyInstaller.utils.hooks import copy_metadata

datas = copy_metadata("torchmetrics", recursive=True)
