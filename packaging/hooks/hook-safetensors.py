"""safetensors (not covered by pyinstaller-hooks-contrib): transformers and diffusers ask
importlib.metadata whether it is installed before they use it."""

from PyInstaller.utils.hooks import copy_metadata

datas = copy_metadata("safetensors")
