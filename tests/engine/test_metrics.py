"""engine.metrics on tiny feature models built from configs (random weights, no downloads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import metrics
from engine.metrics import FeatureModels, Unavailable
from engine.protocol.gallery import DEFAULT_FEATURE_MODELS, FEATURE_MODELS

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ fixtures


def _scene_images(seed: int, n: int, size: int = 48) -> list[Image.Image]:
    from engine.toy.world import render, sample_scene

    rng = np.random.default_rng(seed)
    return [Image.fromarray(render(sample_scene(rng), size)[0]) for _ in range(n)]


def _noise_images(seed: int, n: int, size: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _solid(rgb, size: int = 24) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from engine.models.tiny import write_byte_level_tokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    write_byte_level_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, **ids),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("tiny-dino")
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(clip_dir, dino_dir) -> FeatureModels:
    return FeatureModels({"clip": str(clip_dir), "dino": str(dino_dir)}, device="cpu")


def _colour_stats():
    """uint8 (N, 3, H, W) → per-channel mean and std in [0, 1]: 6 features, no weights."""
    import torch

    class ColourStats(torch.nn.Module):
        def forward(self, x):
            x = x.float() / 255
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    return ColourStats()


def _colour_logits():
    """uint8 → logits over three classes (red, green, blue): a confident toy classifier."""
    import torch

    class ColourLogits(torch.nn.Module):
        def forward(self, x):
            return 20 * (x.float() / 255).mean(dim=(2, 3))

    return ColourLogits()


# ------------------------------------------------------------------------------------ sources


def test_import_is_light():
    code = "import sys, engine.metrics; print(sorted(m for m in ('torch', 'transformers', 'torchmetrics') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sources_defaults():
    resolved = metrics.resolve_sources({"clip": "", "dino": "  /some/dino  "})
    assert set(resolved) == set(FEATURE_MODELS)
    assert resolved["clip"] == DEFAULT_FEATURE_MODELS["clip"]
    assert resolved["dino"] == "/some/dino"
    assert resolved["inception"] == "" and resolved["lpips"] == "alex"
    models = FeatureModels({})
    assert models.describe("clip") == DEFAULT_FEATURE_MODELS["clip"]
    assert models.describe("dino") == DEFAULT_FEATURE_MODELS["dino"]
    assert "Inception" in models.describe("inception")
    assert models.describe("lpips") == "LPIPS (AlexNet)"
    with pytest.raises(ValueError):
        metrics.resolve_sources({"vgg": "x"})
    with pytest.raises(ValueError):
        models.describe("toy")


def test_missing_folder_is_unavailable(tmp_path):
    models = FeatureModels({"clip": str(tmp_path / "nowhere"), "dino": str(tmp_path / "nor-here")})
    with pytest.raises(Unavailable) as clip:
        models.clip()
    assert "does not exist" in clip.value.reason and "Settings → Feature models" in clip.value.reason
    with pytest.raises(Unavailable) as dino:
        models.dino()
    assert "does not exist" in dino.value.reason
    with pytest.raises(Unavailable):  # the failure is kept, not retried
        models.clip()


def test_offline_hub_id_is_unavailable():
    from huggingface_hub import try_to_load_from_cache

    models = FeatureModels({"clip": "s2s-tests/no-such-clip"})
    with pytest.raises(Unavailable) as exc:
        models.clip()
    assert exc.value.reason.startswith("CLIP model s2s-tests/no-such-clip is not downloaded and this machine is offline")
    assert "choose a local folder in Settings → Feature models" in exc.value.reason
    default = DEFAULT_FEATURE_MODELS["dino"]
    if isinstance(try_to_load_from_cache(default, "config.json"), str):
        pytest.skip(f"{default} is in this machine's hub cache")
    with pytest.raises(Unavailable, match="is not downloaded and this machine is offline"):
        FeatureModels({}).dino()


def test_wrong_kind_of_folder_is_unavailable(clip_dir, dino_dir, tmp_path):
    with pytest.raises(Unavailable, match="not CLIP"):
        FeatureModels({"clip": str(dino_dir)}).clip()
    with pytest.raises(Unavailable, match="not a ViT image model"):
        FeatureModels({"dino": str(clip_dir)}).dino()
    (tmp_path / "empty").mkdir()
    with pytest.raises(Unavailable, match="no config.json"):
        FeatureModels({"clip": str(tmp_path / "empty")}).clip()


# ------------------------------------------------------------------------------------ CLIP, DINO


def test_clip_t_range_and_convention(models):
    clip = models.clip()
    assert models.clip() is clip  # loaded once
    assert models.describe("clip") == clip.name
    images = _scene_images(1, 5)
    prompts = ["a red star", "a photo of a blue circle", "a green heart on a white background", "a", "x " * 200]
    score = metrics.clip_t(clip, images, prompts)
    assert 0.0 <= score <= 100.0
    cos = (clip.image_embeddings(images) * clip.text_embeddings(prompts)).sum(dim=1).double()
    assert score == pytest.approx(float((100 * cos.clamp(min=0)).mean()), abs=1e-4)
    with pytest.raises(ValueError):
        metrics.clip_t(clip, images, prompts[:2])


def test_clip_embeddings_match_torchmetrics(models):
    """The scorer's embeddings are torchmetrics CLIPScore's: its number is max(mean 100·cos, 0)."""
    import torch
    from torchmetrics.multimodal.clip_score import CLIPScore

    clip = models.clip()

    class Features:  # torchmetrics ≤ 1.9 expects tensors from get_*_features (transformers 5 changed it)
        config = clip.model.config

        def to(self, device):
            return self

        def get_image_features(self, *a, **k):
            return metrics._embedding(clip.model.get_image_features(*a, **k))

        def get_text_features(self, *a, **k):
            return metrics._embedding(clip.model.get_text_features(*a, **k))

    images = _scene_images(10, 4)
    prompts = ["a red star", "a blue circle", "a yellow square on a gray background", "a heart"]
    library = CLIPScore(model_name_or_path=lambda: (Features(), clip.processor))
    library.update([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in images], prompts)
    cos = (clip.image_embeddings(images) * clip.text_embeddings(prompts)).sum(dim=1).double()
    assert float(library.compute()) == pytest.approx(max(float(100 * cos.mean()), 0.0), abs=1e-3)


def test_clip_i(models):
    clip = models.clip()
    same, other = _scene_images(2, 4), _noise_images(3, 4)
    emb = clip.image_embeddings(same + other)
    assert emb.shape == (8, 16)
    assert np.allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)
    self_score = metrics.clip_i(clip, same, same)
    cross = metrics.clip_i(clip, same, other)
    assert -1.0 <= cross <= 1.0 and -1.0 <= self_score <= 1.0
    assert self_score > cross
    assert metrics.clip_i(clip, same[:1], same[:1]) == pytest.approx(1.0, abs=1e-5)


def test_dino(models, dino_dir):
    dino = models.dino()
    assert models.describe("dino") == str(dino_dir)
    image = _scene_images(4, 1)[0]
    assert metrics.dino_similarity(dino, [image] * 3, [image.copy()] * 2) == pytest.approx(1.0, abs=1e-5)
    scenes, noise = _scene_images(5, 3), _noise_images(6, 3)
    cross = metrics.dino_similarity(dino, scenes, noise)
    assert -1.0 <= cross <= 1.0
    assert metrics.dino_similarity(dino, scenes, scenes) > cross
    assert dino.embed(scenes).shape == (3, 32)
    with pytest.raises(ValueError):
        metrics.dino_similarity(dino, [], scenes)


def test_structure_distance_is_pie_benchs_key_self_similarity(models):
    """The last layer's keys, caught by the hook, equal its key projection of its input by hand;
    the distance is 0 for the same picture, symmetric, and larger for an unrelated one."""
    import torch

    dino = models.dino()
    scenes, noise = _scene_images(7, 2), _noise_images(8, 2)
    sims = dino.key_self_similarity(scenes)
    tokens = (32 // 8) ** 2 + 1  # patches + CLS
    assert sims.shape == (2, tokens, tokens) and torch.allclose(sims.diagonal(dim1=1, dim2=2), torch.ones(2, tokens))
    pixels = dino.image_processor(images=scenes, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = dino.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        last = dino.model.layers[-1] if hasattr(dino.model, "layers") else dino.model.encoder.layer[-1]
        keys = metrics._last_key_projection(dino.model)(last.layernorm_before(hidden))
    keys = torch.nn.functional.normalize(keys, dim=-1)
    assert torch.allclose(sims, keys @ keys.transpose(1, 2), atol=1e-5)
    same = metrics.structure_distances(dino, scenes, [s.copy() for s in scenes])
    assert same == pytest.approx([0.0, 0.0], abs=1e-10)
    there, back = metrics.structure_distances(dino, scenes, noise), metrics.structure_distances(dino, noise, scenes)
    assert there == pytest.approx(back) and min(there) > 0
    with pytest.raises(ValueError):
        metrics.structure_distances(dino, scenes, noise[:1])


# ------------------------------------------------------------------------------------ FID, IS


def _fid_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root)


def test_fid_math():

    inception = metrics.InceptionFeatures(_colour_stats(), image_size=16)
    real = _scene_images(7, 12, size=20)
    brighter = [Image.fromarray(np.clip(np.asarray(i, dtype=np.int16) + 60, 0, 255).astype(np.uint8)) for i in real]
    same = metrics.fid(inception, real, [i.copy() for i in real])
    shifted = metrics.fid(inception, brighter, real)
    assert same == pytest.approx(0.0, abs=1e-6)
    assert shifted > 0.01 > same
    # torchmetrics' number is the Fréchet distance of the features the module returns
    feats = [inception.fid_feature(b).double().numpy() for b in inception.batches(brighter)]
    feats_real = [inception.fid_feature(b).double().numpy() for b in inception.batches(real)]
    assert shifted == pytest.approx(_fid_by_hand(np.concatenate(feats), np.concatenate(feats_real)), rel=1e-4)
    with pytest.raises(ValueError):
        metrics.fid(inception, real[:1], real)


def test_inception_score():
    inception = metrics.InceptionFeatures(_colour_stats(), _colour_logits(), image_size=8)
    red = [_solid((255, 0, 0)) for _ in range(24)]
    mixed = [_solid(c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255)) for _ in range(8)]
    mean_red, std_red = metrics.inception_score(inception, red)
    mean_mixed, std_mixed = metrics.inception_score(inception, mixed)
    assert mean_red == pytest.approx(1.0, abs=1e-4)
    assert 2.5 < mean_mixed <= 3.0 + 1e-6
    assert std_mixed >= 0.0 and np.isfinite(std_mixed)
    assert metrics.inception_score(inception, mixed) == (mean_mixed, std_mixed)  # seeded split shuffle
    few_mean, few_std = metrics.inception_score(inception, mixed[:5])
    assert few_std == 0.0 and few_mean >= 1.0 - 1e-6
    assert [metrics.inception_splits(n) for n in (1, 19, 20, 99, 150, 1000)] == [1, 1, 2, 2, 3, 10]
    with pytest.raises(Unavailable):
        metrics.InceptionFeatures(_colour_stats(), image_size=8).is_feature  # noqa: B018


def test_inception_unavailable(tmp_path, monkeypatch):
    reason = _reason(lambda: FeatureModels({}).inception())
    if reason is None:
        pytest.skip("InceptionV3 weights are available on this machine")
    assert "torch-fidelity" in reason or "offline" in reason or "torchvision" in reason
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    assert _reason(lambda: FeatureModels({}).inception()).endswith("(pip install torch-fidelity)")
    monkeypatch.delitem(sys.modules, "torch_fidelity")
    missing = _reason(lambda: FeatureModels({"inception": str(tmp_path / "nope.pth")}).inception())
    assert "does not exist" in missing or "pip install" in missing or "fails to import" in missing


def test_weights_that_run_code_are_refused(tmp_path):
    import torch

    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2), "extra": _Opaque()}, path)
    with pytest.raises(Unavailable, match="cannot be read as plain weights"):
        metrics._safe_state_dict(path, "InceptionV3 weights")
    torch.save({"w": torch.ones(2)}, path)
    assert metrics._safe_state_dict(path, "x")["w"].sum() == 2


class _Opaque:
    pass


def _reason(load) -> str | None:
    try:
        load()
    except Unavailable as exc:
        return exc.reason
    return None


# ------------------------------------------------------------------------------------ LPIPS


def test_lpips_diversity_protocol():
    """Pairs within each group, averaged per group, then over groups (a stand-in LPIPS net)."""

    def mean_abs(a, b, normalize=True):
        return (a - b).abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)

    scorer = metrics.LpipsScorer(mean_abs)
    black, white, grey = _solid((0, 0, 0)), _solid((255, 255, 255)), _solid((51, 51, 51))
    # group 1: pairs (b,b)=0, (b,w)=1, (b,w)=1 → 2/3; group 2: (b,grey)=0.2 (grey resized from 8 px)
    value = metrics.lpips_diversity(scorer, [[black, black, white], [black, grey.resize((8, 8))], [white]])
    assert value == pytest.approx((2 / 3 + 0.2) / 2, abs=1e-6)
    assert metrics.lpips_diversity(scorer, [[black, black]]) == 0.0
    with pytest.raises(ValueError):
        metrics.lpips_diversity(scorer, [[black]])


def test_lpips_unavailable_offline(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    reason = _reason(lambda: FeatureModels({}).lpips())
    assert reason == ("LPIPS (the DIV diversity score, the background of an insertion): needs the torchvision package "
                      "(pip install torchvision)")
    monkeypatch.delitem(sys.modules, "torchvision")
    reason = _reason(lambda: FeatureModels({}).lpips())
    if reason is None:
        pytest.skip("torchvision's AlexNet weights are in this machine's torch hub cache")
    assert "offline" in reason or "torchvision" in reason


def _torchvision():
    try:
        import torchvision
    except Exception as exc:  # missing, or built for another torch
        pytest.skip(f"LPIPS needs a working torchvision here ({type(exc).__name__}: {exc})")
    return torchvision


def test_lpips_with_a_local_backbone(tmp_path):
    import torch

    torchvision = _torchvision()
    torch.manual_seed(0)
    path = tmp_path / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    models = FeatureModels({"lpips": str(path)})
    lpips = models.lpips()
    assert "AlexNet" in models.describe("lpips")
    a, b = _scene_images(8, 2, size=64)
    assert metrics.lpips_diversity(lpips, [[a, a.copy()]]) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips_diversity(lpips, [[a, b]]) > 0.0
    (tmp_path / "bogus.pth").write_bytes(b"not weights")
    with pytest.raises(Unavailable):
        FeatureModels({"lpips": str(tmp_path / "bogus.pth")}).lpips()


def test_lpips_with_cached_torchvision_weights():
    import torch

    torchvision = _torchvision()
    url = torchvision.models.AlexNet_Weights.DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if not cached.is_file():
        pytest.skip(f"torchvision's AlexNet weights are not in the torch hub cache ({cached})")
    lpips = FeatureModels({}).lpips()
    a, b = _scene_images(9, 2, size=64)
    assert 0.0 < metrics.lpips_diversity(lpips, [[a, b]]) < 1.5


# ------------------------------------------------------------------------------------ the toy CLIP


def test_toy_clip_reads_captions():
    """resources/toy-clip (python -m engine.toy.train_clip) loads as a CLIP source and prefers a
    scene's own caption to the same caption with another colour."""
    from engine.toy.train_clip import _swap
    from engine.toy.world import render, sample_scene

    folder = ROOT / "resources" / "toy-clip"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("resources/toy-clip is not there (python -m engine.toy.train_clip makes it)")
    clip = FeatureModels({"clip": str(folder)}).clip()
    rng = np.random.default_rng(123)
    scenes = [sample_scene(rng, n_objects=1) for _ in range(24)]
    images = [Image.fromarray(render(s, 64)[0]) for s in scenes]
    own = metrics.clip_t(clip, images, [s.caption for s in scenes])
    swapped = metrics.clip_t(clip, images, [_swap(s, "colour", rng) for s in scenes])
    assert own > swapped + 5
