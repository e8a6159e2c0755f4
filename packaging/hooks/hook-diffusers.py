"""diffusers (pyinstaller-hooks-contrib has no hook for it).

``diffusers/__init__.py`` is a ``_LazyModule``: ``from diffusers import StableDiffusionPipeline``
imports the submodule by name at first use, and a model folder's ``model_index.json`` names its
classes as strings, so PyInstaller's import scan sees none of them. Collect the submodules, leaving
out what a PyTorch desktop app never runs (Flax/ONNX/command-line, the research pipelines).
"""

from PyInstaller.utils.hooks import collect_submodules, copy_metadata

_SKIP = (".commands", "flax", "onnx", ".experimental", ".pipelines.deprecated", "_jax")


def _wanted(name: str) -> bool:
    return not any(part in name for part in _SKIP)


hiddenimports = collect_submodules("diffusers", filter=_wanted)

# At import, diffusers checks its dependencies' versions through importlib.metadata
# (dependency_versions_check: without this the frozen engine dies with
# "PackageNotFoundError: The 'requests' distribution was not found").
datas = copy_metadata("diffusers", recursive=True)
