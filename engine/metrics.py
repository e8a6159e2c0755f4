"""Image metrics for the evaluation table, and the feature models they need.

The maths comes from the field's libraries where they have it: torchmetrics'
``FrechetInceptionDistance``, ``InceptionScore`` and ``LearnedPerceptualImagePatchSimilarity``, over
transformers' CLIP and DINO ViT models and torch-fidelity's InceptionV3 (the one torchmetrics uses).
Written here by hand, each marked where it is: CLIP-T's per-pair clamp (torchmetrics' CLIPScore
clamps the mean instead), the mean *all-pairs* cosine similarity (CLIP-I, DINO; torchmetrics has
none), the DreamBooth DIV protocol over LPIPS pairs, and loading local weight files that the
libraries would otherwise download.

A feature model that cannot be had here (not downloaded and offline, a missing folder, a missing or
broken optional package) raises ``Unavailable`` with a sentence for the user; nothing ever falls back
to another model silently. Heavy packages (torch, transformers, torchmetrics) are imported inside the
functions, so importing this module is cheap and never fails.

Sources (``FeatureModels.sources``; "" or a missing key means the default):
    clip       a local folder (CLIPModel + tokenizer + image processor) or a hub id;
               default ``DEFAULT_FEATURE_MODELS["clip"]``
    dino       a local folder (transformers AutoModel, e.g. ViTModel, + image processor) or a hub id;
               default ``DEFAULT_FEATURE_MODELS["dino"]`` (the DreamBooth protocol's ViT-S/16)
    inception  torch-fidelity's InceptionV3 weights: a .pth/.pt/.safetensors file or a folder holding
               one; default: torch-fidelity's own file (downloaded from GitHub into the torch hub cache)
    lpips      "alex" | "vgg" | "squeeze" (torchvision's ImageNet backbone, from download.pytorch.org
               into the torch hub cache), or a local torchvision backbone weights file;
               default "alex" (torchmetrics' default)
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.protocol.gallery import DEFAULT_FEATURE_MODELS, FEATURE_MODELS
from engine.protocol.names import is_hub_id

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

SETTINGS_HINT = "choose a local folder in Settings → Feature models"
FILE_HINT = "choose the file in Settings → Feature models"
TITLES = {"clip": "CLIP", "dino": "DINO", "inception": "InceptionV3 (FID/IS)", "lpips": "LPIPS"}
LPIPS_NETS = {"alex": "AlexNet", "vgg": "VGG16", "squeeze": "SqueezeNet 1.1"}
INCEPTION_NAME = "InceptionV3 (torch-fidelity, 2015-12-05)"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
BATCH = 16  # images per forward pass: bounded memory on CPU and small GPUs


class Unavailable(Exception):
    """A metric that cannot be computed here; .reason is a user-facing sentence (what is missing, what to do)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------ sources


def resolve_sources(sources: dict[str, str] | None) -> dict[str, str]:
    """Every feature model's source, "" and missing keys replaced by the default
    (``DEFAULT_FEATURE_MODELS``; inception: "" = torch-fidelity's own weights; lpips: "alex")."""
    sources = dict(sources or {})
    unknown = set(sources) - set(FEATURE_MODELS)
    if unknown:
        raise ValueError(f"unknown feature model(s) {sorted(unknown)}; known: {', '.join(FEATURE_MODELS)}")
    defaults = {"inception": "", "lpips": "alex", **DEFAULT_FEATURE_MODELS}
    return {kind: (sources.get(kind) or "").strip() or defaults.get(kind, "") for kind in FEATURE_MODELS}


def _offline() -> bool:
    """The app's offline switch (HF_HUB_OFFLINE), read at call time; it also stops the torch hub
    downloads below (InceptionV3, LPIPS backbones), so an offline machine never waits on a socket."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.is_offline_mode())
    except Exception:  # an old or odd huggingface_hub: the environment variable is the switch
        return False


def _import(module: str, package: str, what: str):
    """Import an optional package, or say which one to install (a broken install says so too)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = getattr(exc, "name", None) or ""
        missing = package if not name or module == name or module.startswith(name + ".") else name
        raise Unavailable(f"{what}: needs the {missing} package (pip install {missing})") from None
    except Exception as exc:  # e.g. torchvision built for another torch: RuntimeError at import
        raise Unavailable(
            f"{what} needs {package}, which is installed but fails to import ({type(exc).__name__}: "
            f"{_first_line(exc)}): reinstall the {package} build made for your torch"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]  # "Error(s) in loading …:" + what
    return text[:300]


def _hub_or_folder(kind: str, source: str) -> tuple[str, bool]:
    """(what from_pretrained gets, local_files_only) for a folder or a hub id; Unavailable if neither
    exists here."""
    title = TITLES[kind]
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise Unavailable(f"{title} model folder {path} has no config.json (not a transformers model): "
                              f"{SETTINGS_HINT}")
        return str(path), True
    if path.exists():
        raise Unavailable(f"{title} model {path} is a file; a {title} model is a folder: {SETTINGS_HINT}")
    if not is_hub_id(source):
        raise Unavailable(f"{title} model folder {source} does not exist: {SETTINGS_HINT}")
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(source, "config.json"), str)
    if not cached and _offline():
        raise Unavailable(f"{title} model {source} is not downloaded and this machine is offline: connect "
                          f"to the internet once to download it, or {SETTINGS_HINT}")
    return source, _offline()


def _load_failed(kind: str, source: str, exc: BaseException) -> Unavailable:
    where = "download or load" if is_hub_id(source) and not Path(source).expanduser().exists() else "load"
    return Unavailable(f"could not {where} the {TITLES[kind]} model {source} ({type(exc).__name__}: "
                       f"{_first_line(exc)}): check the connection, or {SETTINGS_HINT}")


# ------------------------------------------------------------------------------------ images


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _chw_uint8(image: Image.Image) -> torch.Tensor:
    import numpy as np
    import torch

    return torch.from_numpy(np.array(_rgb(image), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def _square(image: Image.Image, size: int) -> Image.Image:
    """Centre square crop, then a bicubic resize to size × size (FID/IS inputs: the subject's photos
    come in any aspect ratio, and one batch needs one size)."""
    from PIL import Image

    image = _rgb(image)
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if side == size else image.resize((size, size), Image.BICUBIC)


def _chunks(items: Sequence, n: int = BATCH):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _mean_pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine over all (a_i, b_j) pairs of L2-normalised rows. By hand: torchmetrics'
    CLIPScore pairs images with images one-to-one and clips at 0; the DreamBooth protocol averages
    every generated × real pair, signed."""
    return float((a.double() @ b.double().T).mean())


# ------------------------------------------------------------------------------------ CLIP


def _embedding(out) -> torch.Tensor:
    """The projected embedding from get_image_features/get_text_features: a tensor before
    transformers 5, a BaseModelOutputWithPooling (its pooler_output) since."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    """A CLIP model and its processor (tokenizer + image processor) on one device."""

    def __init__(self, model, processor, device: str = "cpu", name: str = ""):
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = device
        self.name = name

    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings, (n, projection_dim), float32 on the CPU."""
        import torch

        out = []
        with torch.inference_mode():
            for chunk in _chunks(images):
                pixels = self.processor(images=[_rgb(i) for i in chunk], return_tensors="pt")["pixel_values"]
                feats = _embedding(self.model.get_image_features(pixel_values=pixels.to(self.device)))
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)

    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        import torch

        limit = self.model.config.text_config.max_position_embeddings
        out = []
        with torch.inference_mode():
            for chunk in _chunks(list(texts)):
                tokens = self.processor(text=list(chunk), return_tensors="pt", padding=True, truncation=True,
                                        max_length=limit)
                feats = _embedding(self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                                attention_mask=tokens["attention_mask"].to(self.device)))
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)


def _load_clip(source: str, device: str) -> ClipScorer:
    _import("torch", "torch", "CLIP")
    transformers = _import("transformers", "transformers", "CLIP")
    location, local_only = _hub_or_folder("clip", source)
    path = Path(location)
    if path.is_dir():
        model_type = _model_type(path)
        if model_type != "clip":
            raise Unavailable(f"CLIP model folder {path} holds a {model_type or 'unknown'} model, not CLIP: "
                              f"{SETTINGS_HINT}")
    try:
        model = transformers.CLIPModel.from_pretrained(location, local_files_only=local_only)
        tokenizer_from = _subfolder(location, "tokenizer", ("tokenizer_config.json", "vocab.json", "tokenizer.json"))
        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_from, local_files_only=local_only)
        image_from = _subfolder(location, "feature_extractor", ("preprocessor_config.json",))
        image_processor = transformers.AutoImageProcessor.from_pretrained(image_from, local_files_only=local_only)
        processor = transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    except Exception as exc:  # every load failure (missing file, no network, bad config) is "not here"
        raise _load_failed("clip", source, exc) from None
    return ClipScorer(model, processor, device, name=source)


def _model_type(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def _subfolder(location: str, name: str, markers: tuple[str, ...]) -> str:
    """A local folder's <name>/ when the files are there and not at the top (diffusers-style layout)."""
    root = Path(location)
    if root.is_dir() and not any((root / m).is_file() for m in markers):
        if any((root / name / m).is_file() for m in markers):
            return str(root / name)
    return location


def clip_t(clip: ClipScorer, images: list[Image.Image], prompts: list[str]) -> float:
    """CLIP-T: mean over (image, prompt) pairs of 100·max(cos, 0), the CLIP score convention
    (torchmetrics' CLIPScore documents it so). By hand: torchmetrics ≤ 1.9 clamps the *mean* at 0
    rather than each pair (the same number whenever every cosine is positive, as with real CLIP
    models), and its text path cuts over-long prompts after the end token CLIP pools at, and
    breaks on transformers 5's feature outputs (Lightning-AI/torchmetrics#3428). Prompts longer than
    the text model's context are truncated with the end token kept."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    if not images:
        raise ValueError("clip_t needs images")
    cos = (clip.image_embeddings(images).double() * clip.text_embeddings(prompts).double()).sum(dim=1)
    return float((100 * cos.clamp(min=0)).mean())


def clip_i(clip: ClipScorer, images: list[Image.Image], real_images: list[Image.Image]) -> float:
    """CLIP-I: mean cosine similarity over all generated × real pairs of CLIP image embeddings."""
    if not images or not real_images:
        raise ValueError("clip_i needs generated and real images")
    return _mean_pairwise_cosine(clip.image_embeddings(images), clip.image_embeddings(real_images))


# ------------------------------------------------------------------------------------ DINO


class ImageEmbedder:
    """A ViT (DINO) image model: the CLS token of the last hidden state, L2-normalised."""

    def __init__(self, model, image_processor, device: str = "cpu", name: str = ""):
        self.model = model.eval().to(device)
        self.image_processor = image_processor
        self.device = device
        self.name = name

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import torch

        out = []
        with torch.inference_mode():
            for chunk in _chunks(images):
                pixels = self.image_processor(images=[_rgb(i) for i in chunk], return_tensors="pt")["pixel_values"]
                hidden = self.model(pixel_values=pixels.to(self.device)).last_hidden_state
                out.append(torch.nn.functional.normalize(hidden[:, 0].float(), dim=-1).cpu())
        return torch.cat(out)

    def key_self_similarity(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(n, tokens, tokens): cosine similarity between the last layer's attention keys of every
        pair of tokens (CLS included), heads concatenated: the structure descriptor of Splice
        (Tumanyan et al. 2022) that PIE-Bench's structure distance compares. By hand: no library
        exposes it; the keys are caught with a hook on the last key projection."""
        import torch

        key = _last_key_projection(self.model)
        caught: list = []
        handle = key.register_forward_hook(lambda module, args, output: caught.append(output))
        out = []
        try:
            with torch.inference_mode():
                for chunk in _chunks(images):
                    pixels = self.image_processor(images=[_rgb(i) for i in chunk], return_tensors="pt")["pixel_values"]
                    caught.clear()
                    self.model(pixel_values=pixels.to(self.device))
                    keys = torch.nn.functional.normalize(caught[-1].float(), dim=-1)
                    out.append((keys @ keys.transpose(1, 2)).cpu())
        finally:
            handle.remove()
        return torch.cat(out)


def _last_key_projection(model):
    """The last transformer layer's key projection: ``…k_proj`` (transformers ≥ 5) or
    ``…attention.key`` (earlier ViT/DINOv2 layouts)."""
    import torch

    found = [m for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and (name.endswith("k_proj") or name.endswith(".key"))]
    if not found:
        raise Unavailable(f"the DINO model ({type(model).__name__}) has no attention key projection to measure "
                          f"structure with: {SETTINGS_HINT}")
    return found[-1]


def structure_distances(dino: ImageEmbedder, sources: list[Image.Image], edits: list[Image.Image]) -> list[float]:
    """PIE-Bench's structure distance per (source, edit) pair: the mean squared difference of their
    DINO key self-similarity matrices (0 for the same picture; PIE-Bench tables show it ×10³)."""
    if len(sources) != len(edits) or not sources:
        raise ValueError(f"structure_distances needs pairs (got {len(sources)} sources and {len(edits)} edits)")
    a, b = dino.key_self_similarity(sources).double(), dino.key_self_similarity(edits).double()
    return ((a - b) ** 2).mean(dim=(1, 2)).tolist()


def _load_dino(source: str, device: str) -> ImageEmbedder:
    _import("torch", "torch", "DINO")
    transformers = _import("transformers", "transformers", "DINO")
    location, local_only = _hub_or_folder("dino", source)
    try:
        config = transformers.AutoConfig.from_pretrained(location, local_files_only=local_only)
        # ViTModel's pooler is not part of DINO (the checkpoints have none): the CLS token is the embedding
        extra = {"add_pooling_layer": False} if config.model_type == "vit" else {}
        model = transformers.AutoModel.from_pretrained(location, local_files_only=local_only, **extra)
        image_from = _subfolder(location, "feature_extractor", ("preprocessor_config.json",))
        image_processor = transformers.AutoImageProcessor.from_pretrained(image_from, local_files_only=local_only)
    except Exception as exc:
        raise _load_failed("dino", source, exc) from None
    if not hasattr(model, "embeddings"):  # ViTModel, Dinov2Model, DeiTModel…; not CLIPModel
        raise Unavailable(f"DINO model {source} is a {config.model_type} model, not a ViT image model: "
                          f"{SETTINGS_HINT}")
    return ImageEmbedder(model, image_processor, device, name=source)


def dino_similarity(dino: ImageEmbedder, images: list[Image.Image], real_images: list[Image.Image]) -> float:
    """DINO: mean cosine similarity over all generated × real pairs of CLS embeddings (DreamBooth)."""
    if not images or not real_images:
        raise ValueError("dino_similarity needs generated and real images")
    return _mean_pairwise_cosine(dino.embed(images), dino.embed(real_images))


# ------------------------------------------------------------------------------------ Inception


def _feature_module(module, device: str, image_size: int):
    """``module`` (uint8 (N, 3, S, S) → features) moved to ``device``, taking input from any device,
    returning (N, D), in eval mode for good, with ``num_features`` known up front (torchmetrics' FID
    would otherwise probe the module with a CPU tensor): the module's own, or one probe here."""
    import torch

    class FeatureModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module.to(device).eval()
            self.num_features = getattr(module, "num_features", None)
            if not isinstance(self.num_features, int):
                with torch.inference_mode():
                    probe = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8, device=device)
                    self.num_features = int(self.inner(probe).reshape(2, -1).shape[1])

        def forward(self, x):
            return self.inner(x.to(device)).reshape(x.shape[0], -1)

        def train(self, mode: bool = True):  # batch norms stay frozen
            return super().train(False)

    return FeatureModule()


class InceptionFeatures:
    """What FID and IS run images through: ``fid_feature`` (uint8 → pool features) and
    ``is_feature`` (uint8 → class logits), torch modules taking (N, 3, image_size, image_size) uint8.
    ``FeatureModels.inception()`` makes torch-fidelity's InceptionV3 ones; tests pass small modules."""

    def __init__(self, fid_feature, is_feature=None, *, image_size: int = 299, device: str = "cpu", name: str = ""):
        self.device = device
        self.image_size = image_size
        self.name = name
        self.fid_feature = _feature_module(fid_feature, device, image_size)
        self._is_feature = _feature_module(is_feature, device, image_size) if is_feature is not None else None

    @property
    def is_feature(self):
        if self._is_feature is None:
            raise Unavailable("the Inception Score needs a classifier (logits) module, which this Inception "
                              "model does not provide")
        return self._is_feature

    def batches(self, images: Sequence[Image.Image]):
        import torch

        for chunk in _chunks(images):
            yield torch.stack([_chw_uint8(_square(i, self.image_size)) for i in chunk]).to(self.device)


def _inception_weights_url() -> str:
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        return URL_INCEPTION_V3
    except Exception:
        return ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                "weights-inception-2015-12-05-6726825d.pth")


def _torch_hub_file(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url.split("?")[0]).name


def _safe_state_dict(path: Path, what: str) -> dict:
    """Tensors only: .safetensors, or a pickle that torch's weights-only unpickler accepts (a file
    that would run code is refused, never loaded)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Unavailable(f"{what} file {path} cannot be read as plain weights ({type(exc).__name__}: "
                          f"{_first_line(exc)}): {FILE_HINT}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise Unavailable(f"{what} file {path} holds no state dict: {FILE_HINT}")
    return state


def _weights_file(kind: str, source: str) -> Path:
    """A weights file given as itself or as the folder that holds it (one weights file, or the
    expected name among several)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        expected = [p for p in files if p.name == _torch_hub_file(_inception_weights_url()).name]
        if expected or len(files) == 1:
            return (expected or files)[0]
        problem = "no" if not files else f"{len(files)}"
        raise Unavailable(f"{TITLES[kind]} folder {path} has {problem} weights files ({', '.join(WEIGHT_SUFFIXES)}); "
                          f"{FILE_HINT}")
    raise Unavailable(f"{TITLES[kind]} weights file {source} does not exist: choose it in Settings → Feature models")


def _load_inception(source: str, device: str) -> InceptionFeatures:
    what = "FID and the Inception Score (Inception features)"
    _import("torch", "torch", what)
    _import("torchmetrics.image.fid", "torchmetrics", what)
    _import("torch_fidelity", "torch-fidelity", what)
    import tempfile

    import torch
    from torchmetrics.image.fid import NoTrainInceptionV3

    if source:
        path = _weights_file("inception", source)
    else:  # torch-fidelity's own file, where its own download would put it
        url = _inception_weights_url()
        path = _torch_hub_file(url)
        if not path.is_file():
            if _offline():
                raise Unavailable(
                    f"{what} need torch-fidelity's InceptionV3 weights ({path.name}, from GitHub), which are not "
                    f"downloaded, and this machine is offline: put the file in {path.parent}, or choose it in "
                    "Settings → Feature models")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(url, str(path), progress=False)
            except Exception as exc:
                raise Unavailable(
                    f"could not download torch-fidelity's InceptionV3 weights ({type(exc).__name__}: "
                    f"{_first_line(exc)}): check the connection, or put {path.name} in {path.parent}, or "
                    "choose it in Settings → Feature models") from None
    state = _safe_state_dict(path, "InceptionV3 weights")
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(path)  # checked above: plain tensors, so torch-fidelity's own torch.load is safe
        if path.suffix == ".safetensors":  # torch-fidelity reads only torch.save files
            weights = str(Path(tmp) / "inception.pth")
            torch.save(state, weights)
        del state
        try:
            modules = [NoTrainInceptionV3(name="inception-v3-compat", features_list=[f],
                                          feature_extractor_weights_path=weights)
                       for f in ("2048", "logits_unbiased")]
            modules[0].num_features, modules[1].num_features = 2048, modules[1].fc.out_features
        except Exception as exc:
            raise Unavailable(f"{path} is not torch-fidelity's InceptionV3 weights ({type(exc).__name__}: "
                              f"{_first_line(exc)}): {FILE_HINT}") from None
    return InceptionFeatures(*modules, image_size=NoTrainInceptionV3.INPUT_IMAGE_SIZE, device=device,
                             name=str(path) if source else INCEPTION_NAME)


def fid(inception: InceptionFeatures, images: list[Image.Image], real_images: list[Image.Image]) -> float:
    """Fréchet Inception Distance of the generated images to the real ones (torchmetrics)."""
    if len(images) < 2 or len(real_images) < 2:
        raise ValueError(f"FID needs at least 2 generated and 2 real images (got {len(images)} and {len(real_images)})")
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=inception.fid_feature, reset_real_features=True).to(inception.device)
    with torch.inference_mode():
        for batch in inception.batches(real_images):
            metric.update(batch, real=True)
        for batch in inception.batches(images):
            metric.update(batch, real=False)
        return max(0.0, float(metric.compute()))  # ≥ 0 in exact arithmetic; float noise can dip below


def inception_splits(n: int) -> int:
    """IS splits for n images: n // 50 (splits of ≥ 50 images), at most the standard 10, at least 2
    from 20 images on (so there is a std), 1 below 20."""
    if n < 20:
        return 1
    return max(2, min(10, n // 50))


def inception_score(inception: InceptionFeatures, images: list[Image.Image]) -> tuple[float, float]:
    """Inception Score (mean, std over splits; std 0.0 with one split), torchmetrics' InceptionScore.
    Deterministic: the split shuffle uses a fixed seed."""
    if not images:
        raise ValueError("inception_score needs images")
    import warnings

    import torch
    from torchmetrics.image.inception import InceptionScore

    splits = inception_splits(len(images))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=inception.is_feature, splits=splits).to(inception.device)
    with torch.inference_mode():
        for batch in inception.batches(images):
            metric.update(batch)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(0)
            warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # one split: no std
            mean, std = metric.compute()
    return float(mean), (float(std) if splits > 1 else 0.0)


# ------------------------------------------------------------------------------------ LPIPS


@dataclass
class LpipsScorer:
    """torchmetrics' LPIPS network: ``net(a, b, normalize=True)`` on float (N, 3, H, W) in [0, 1]."""

    net: Any
    device: str = "cpu"
    name: str = ""

    def distances(self, pairs: Sequence[tuple[Image.Image, Image.Image]]) -> list[float]:
        import torch
        from PIL import Image

        out: list[float] = []
        with torch.inference_mode():
            for chunk in _chunks(pairs, 8):
                by_size: dict[tuple[int, int], list[tuple]] = {}
                for a, b in chunk:
                    a, b = _rgb(a), _rgb(b)
                    if b.size != a.size:
                        b = b.resize(a.size, Image.BICUBIC)
                    by_size.setdefault(a.size, []).append((a, b))
                for group in by_size.values():
                    left = torch.stack([_chw_uint8(a) for a, _ in group]).float().div(255).to(self.device)
                    right = torch.stack([_chw_uint8(b) for _, b in group]).float().div(255).to(self.device)
                    out += self.net(left, right, normalize=True).reshape(-1).double().cpu().tolist()
        return out


def _lpips_backbone_net(state: dict) -> str:
    if any(".squeeze." in k for k in state):
        return "squeeze"
    first = state.get("features.0.weight")
    if first is None:
        raise ValueError("no features.0.weight: not a torchvision AlexNet/VGG16/SqueezeNet state dict")
    return "alex" if first.shape[-1] == 11 else "vgg"


def _load_lpips(source: str, device: str) -> LpipsScorer:
    what = "LPIPS (the DIV diversity score, the background of an insertion)"
    _import("torch", "torch", what)
    torchvision = _import("torchvision", "torchvision", what)
    lpip = _import("torchmetrics.image.lpip", "torchmetrics", what)
    if source in LPIPS_NETS:
        weights_enum = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}[source]
        url = getattr(torchvision.models, weights_enum).DEFAULT.url
        cached = _torch_hub_file(url)
        if not cached.is_file() and _offline():
            raise Unavailable(
                f"{what} needs torchvision's {LPIPS_NETS[source]} weights ({cached.name}, from download.pytorch.org), "
                f"which are not downloaded, and this machine is offline: put the file in {cached.parent}, or "
                "choose it in Settings → Feature models")
        try:
            metric = lpip.LearnedPerceptualImagePatchSimilarity(net_type=source, normalize=True)
        except Exception as exc:
            raise Unavailable(f"could not get torchvision's {LPIPS_NETS[source]} weights for {what} "
                              f"({type(exc).__name__}: {_first_line(exc)}): check the connection, or put "
                              f"{cached.name} in {cached.parent}") from None
        return LpipsScorer(metric.net.to(device).eval(), device, name=f"LPIPS ({LPIPS_NETS[source]})")
    # A local backbone file: torchmetrics' LPIPS class always fetches the backbone itself, so build
    # its network with a random backbone and load the file's weights into it (private torchmetrics
    # class; the linear LPIPS layers are torchmetrics' own, shipped in the package).
    path = Path(source).expanduser()
    if not path.is_file():
        raise Unavailable(f"{what}: {source} is neither a backbone name ({', '.join(LPIPS_NETS)}) nor an "
                          "existing weights file: choose it in Settings → Feature models")
    state = _safe_state_dict(path, "LPIPS backbone")
    try:
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        net_type = _lpips_backbone_net(state)
        net = _NoTrainLpips(net=net_type, pnet_rand=True)
        backbone = net.net.state_dict()
        # its slices hold torchvision's features[i] under their own index: slice1.0.weight (AlexNet,
        # VGG) or slices.0.0.weight (SqueezeNet) is features.0.weight
        net.net.load_state_dict({k: state[re.sub(r"^(slice\d+|slices\.\d+)\.", "features.", k)] for k in backbone})
    except Exception as exc:
        raise Unavailable(f"{path} is not a torchvision AlexNet/VGG16/SqueezeNet backbone for {what} "
                          f"({type(exc).__name__}: {_first_line(exc)}): {FILE_HINT}") from None
    return LpipsScorer(net.to(device).eval(), device, name=f"LPIPS ({LPIPS_NETS[net_type]}, {path.name})")


def lpips_diversity(lpips: LpipsScorer, groups: list[list[Image.Image]]) -> float:
    """DreamBooth DIV: mean LPIPS distance between images of the same prompt. By hand: every
    unordered pair within a group, averaged per group, then over groups (each prompt counts once)."""
    pairs = [[(g[i], g[j]) for i in range(len(g)) for j in range(i + 1, len(g))] for g in groups]
    pairs = [p for p in pairs if p]
    if not pairs:
        raise ValueError("lpips_diversity needs a group with at least two images")
    flat = lpips.distances([pair for group in pairs for pair in group])
    means, start = [], 0
    for group in pairs:
        means.append(sum(flat[start:start + len(group)]) / len(group))
        start += len(group)
    return float(sum(means) / len(means))


# ------------------------------------------------------------------------------------ the models


_LOADERS = {"clip": _load_clip, "dino": _load_dino, "inception": _load_inception, "lpips": _load_lpips}


@dataclass
class FeatureModels:
    """The feature models an evaluation uses, loaded on first use and kept (a failure too)."""

    sources: dict[str, str] = field(default_factory=dict)  # {"clip": folder|hub id, …}; "" → default
    device: str = "cpu"
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.sources = resolve_sources(self.sources)

    def _get(self, kind: str):
        if kind not in self._cache:
            try:
                self._cache[kind] = _LOADERS[kind](self.sources[kind], self.device)
            except Unavailable as exc:
                self._cache[kind] = exc
        value = self._cache[kind]
        if isinstance(value, Unavailable):
            raise Unavailable(value.reason)
        return value

    def clip(self) -> ClipScorer:
        return self._get("clip")

    def dino(self) -> ImageEmbedder:
        return self._get("dino")

    def inception(self) -> InceptionFeatures:
        return self._get("inception")

    def lpips(self) -> LpipsScorer:
        return self._get("lpips")

    def describe(self, kind: str) -> str:
        """The model shown in the table header: a hub id, a folder or file, or the library default."""
        if kind not in FEATURE_MODELS:
            raise ValueError(f"unknown feature model {kind!r}")
        source = self.sources[kind]
        loaded = self._cache.get(kind)
        if loaded is not None and not isinstance(loaded, Unavailable) and getattr(loaded, "name", ""):
            return loaded.name
        if kind == "inception":
            return source or INCEPTION_NAME
        if kind == "lpips":
            return f"LPIPS ({LPIPS_NETS[source]})" if source in LPIPS_NETS else f"LPIPS ({Path(source).name})"
        return source
