"""Where the app keeps its files, and the user's settings (Qt-free, JSON, written atomically)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

log = logging.getLogger("s2s.settings")


def app_home() -> Path:
    """``$S2S_HOME`` (tests, portable installs) or the platform's user data folder."""
    override = os.environ.get("S2S_HOME")
    if override:
        home = Path(override).expanduser()
    else:
        import platformdirs

        home = Path(platformdirs.user_data_dir("Subject2Subject", appauthor=False))
    home.mkdir(parents=True, exist_ok=True)
    return home


def outputs_dir() -> Path:
    path = app_home() / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write) -> None:
    """Temp file in the same folder, ``write(binary file)``, fsync, rename: a crash leaves the old or
    the new file under ``path``, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


@dataclass
class ModelEntry:
    name: str
    source: str  # folder, file or hub id, exactly what the engine's load_model takes
    kind: str = ""  # folder | single_file | hub (as the engine classified it)
    allow_pickle: bool = False
    config: str | None = None

    def load_params(self, device: str = "auto") -> dict:
        params = {"source": self.source, "name": self.name, "allow_pickle": self.allow_pickle, "device": device}
        if self.config:
            params["config"] = self.config
        return params


@dataclass
class GenerateDefaults:
    negative_prompt: str = ""
    steps: int = 25
    guidance: float = 7.5
    scheduler: str = "ddim"
    batch: int = 1


@dataclass
class LibraryDefaults:
    min_short_side: int = 256  # photos smaller than this on their short side are refused
    max_megapixels: float = 64.0  # larger ones are refused as possible decompression bombs

    def limits(self):
        from s2s_desktop.library.importer import ImportLimits

        return ImportLimits(min_short_side=int(self.min_short_side), max_megapixels=float(self.max_megapixels))


@dataclass
class FeatureModels:
    """Where the Evaluate page's feature models come from: a folder, a file or a hub id each; ""
    leaves the engine's default (engine.protocol.gallery.DEFAULT_FEATURE_MODELS)."""

    clip: str = ""
    dino: str = ""
    inception: str = ""
    lpips: str = ""

    def sources(self) -> dict[str, str]:
        """The ones the user set, for the evaluate job's ``feature_models``."""
        return {name: value.strip() for name, value in asdict(self).items() if value.strip()}


@dataclass
class Settings:
    models: list[ModelEntry] = field(default_factory=list)
    active_model: str | None = None
    device: str = "auto"
    generate: GenerateDefaults = field(default_factory=GenerateDefaults)
    library: LibraryDefaults = field(default_factory=LibraryDefaults)
    feature_models: FeatureModels = field(default_factory=FeatureModels)

    # --------------------------------------------------------------- models
    def find_model(self, name_or_source: str) -> ModelEntry | None:
        for entry in self.models:
            if name_or_source in (entry.name, entry.source):
                return entry
        return None

    def add_model(self, entry: ModelEntry) -> ModelEntry:
        """Add or replace (same name), keeping names unique."""
        self.models = [m for m in self.models if m.name != entry.name]
        self.models.append(entry)
        return entry

    def remove_model(self, name: str) -> None:
        self.models = [m for m in self.models if m.name != name]
        if self.active_model == name:
            self.active_model = self.models[0].name if self.models else None

    @property
    def active(self) -> ModelEntry | None:
        return self.find_model(self.active_model) if self.active_model else None

    # --------------------------------------------------------------- persistence
    @staticmethod
    def path() -> Path:
        return app_home() / "settings.json"

    def ensure_demo_model(self) -> None:
        """The toy-world model is always listed; on first run it is the active model."""
        from s2s_desktop.demo import demo_entry, toy_model_available

        if not toy_model_available():
            return
        demo = demo_entry()
        self.models = [m for m in self.models if m.name != demo.name]
        self.models.insert(0, demo)
        if self.active is None:
            self.active_model = demo.name

    @classmethod
    def load(cls) -> Settings:
        settings = cls._read()
        settings.ensure_demo_model()
        return settings

    @classmethod
    def _read(cls) -> Settings:
        path = cls.path()
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known_models = {f.name for f in fields(ModelEntry)}
            known_gen = {f.name for f in fields(GenerateDefaults)}
            known_lib = {f.name for f in fields(LibraryDefaults)}
            known_features = {f.name for f in fields(FeatureModels)}
            return cls(
                models=[ModelEntry(**{k: v for k, v in m.items() if k in known_models}) for m in data.get("models", [])],
                active_model=data.get("active_model"),
                device=data.get("device", "auto"),
                generate=GenerateDefaults(**{k: v for k, v in data.get("generate", {}).items() if k in known_gen}),
                library=LibraryDefaults(**{k: v for k, v in data.get("library", {}).items() if k in known_lib}),
                feature_models=FeatureModels(**{k: str(v) for k, v in data.get("feature_models", {}).items()
                                                if k in known_features}),
            )
        except (ValueError, TypeError, OSError) as exc:
            # Keep the unreadable file for the user to inspect; start from defaults.
            backup = path.with_suffix(".json.broken")
            os.replace(path, backup)
            log.warning("settings file was unreadable (%s); moved it to %s and started fresh", exc, backup)
            return cls()

    def save(self) -> None:
        atomic_write_text(self.path(), json.dumps(asdict(self), indent=2))
