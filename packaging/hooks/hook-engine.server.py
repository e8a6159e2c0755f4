"""The engine server (only the engine executable imports it): what it imports by name, which PyInstaller's import scan cannot follow.

- ``engine.server`` imports each job's handler module from a table (``importlib.import_module``);
- transformers resolves ``CLIPTextModel``, ``AutoModel`` (DINO/ViT) and ``AutoTokenizer`` through its
  lazy module at run time, from names in a model folder's config files.
"""

from PyInstaller.utils.hooks import collect_submodules

# The toy world's training scripts ship too: "retrain the toy model" works from a checkout, but the
# modules are small and the evaluator shares code with them.
hiddenimports = collect_submodules("engine")
for family in ("clip", "dinov2", "vit", "auto"):
    hiddenimports += collect_submodules(f"transformers.models.{family}")
