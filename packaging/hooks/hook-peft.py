"""peft (not covered by pyinstaller-hooks-contrib): it asks importlib.metadata for its own and its
dependencies' versions (transformers, accelerate, torch) when its tuners are imported."""

from PyInstaller.utils.hooks import copy_metadata

datas = copy_metadata("peft", recursive=True)
