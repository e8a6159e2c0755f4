"""Meaning checks on the shipped toy-world model (the oracle later features are tested against).

Small fixed sets, deterministic seeds on CPU; thresholds are below what was measured on these
exact sets (see comments), and the full bars live in `python -m eval.toy_model_bars`.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.toy.evaluator import analyse
from engine.toy.scoring import score_caption
from eval.toy_model_bars import (
    DEFAULT_MODEL,
    generate,
    held_out_scenes,
    load_pipeline,
    subject_markings_roundtrip,
    vae_psnr,
)

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "model_index.json").exists(), reason="toy model not present")


@pytest.fixture(scope="module")
def toy():
    return load_pipeline(DEFAULT_MODEL)


def test_autoencoder_reconstructs_held_out_scenes(toy):
    assert vae_psnr(toy, n=24) >= 28.0  # measured 32.6 dB on 200 held-out scenes


def test_autoencoder_keeps_subject_markings(toy):
    """Personalisation decodes through this VAE: a marking it cannot reconstruct cannot be learned."""
    rates = subject_markings_roundtrip(toy, n=16)
    assert all(r["rendered"] >= 0.9 for r in rates.values()), rates
    # measured on these 16 photos each: Dotty 81%, Stripe 100%, Smiley 0% (32 photos: 78/100/0%);
    # the face's thin black features do not survive yet (see README, toy world)
    assert rates["Dotty"]["round_trip"] >= 0.6 and rates["Stripe"]["round_trip"] >= 0.85, rates


def test_single_object_captions_are_drawn(toy):
    scenes = held_out_scenes(16, 1, offset=1)
    images, _ = generate(toy, [s.caption for s in scenes], seed=0)
    verdicts = [score_caption(image, scene.caption) for scene, image in zip(scenes, images, strict=True)]
    colour = np.mean([bool(v.get("colour_ok")) for v in verdicts])
    shape = np.mean([bool(v.get("shape_ok")) for v in verdicts])
    assert colour >= 0.9 and shape >= 0.75, (colour, shape)  # measured 16/16 and 16/16
    named = [v["background_ok"] for v in verdicts if v["background_ok"] is not None]
    assert len(named) == 9 and np.mean(named) >= 0.75, named  # measured 8 of the 9 naming one


def test_two_object_captions_get_both_colours(toy):
    scenes = held_out_scenes(10, 2, offset=2)
    images, _ = generate(toy, [s.caption for s in scenes], seed=0)
    both = np.mean([bool(score_caption(i, s.caption).get("colours_ok")) for s, i in zip(scenes, images, strict=True)])
    assert both >= 0.8, both


def test_colour_tokens_attend_to_their_own_object(toy):
    """The property Prompt-to-Prompt and the heatmaps rely on: a word's 16×16 map covers its object."""
    captions = ["a red circle left of a blue square", "a yellow star above a purple heart",
                "a green triangle right of a orange circle", "a blue heart below a red square"]
    images, maps = generate(toy, captions, seed=0, capture=True)
    tokenizer = toy.tokenizer
    ratios = []
    for caption, image, attn in zip(captions, images, maps, strict=True):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(caption).input_ids)
        colours = [w for w in caption.split() if w in ("red", "blue", "yellow", "purple", "green", "orange")]
        detections = {d.colour: d.mask.reshape(16, 4, 16, 4).mean(axis=(1, 3)).ravel() for d in analyse(image).detections}
        if not all(c in detections for c in colours):
            continue
        for k, colour in enumerate(colours):
            p = attn[:, tokens.index(colour + "</w>")]
            own, other = detections[colour], detections[colours[1 - k]]
            ratios.append(((p * own).sum() / own.sum()) / max((p * other).sum() / other.sum(), 1e-9))
    assert len(ratios) >= 6
    assert np.median(ratios) >= 2.0, ratios


def test_toy_model_loads_through_the_app_registry(tmp_path):
    from engine.generate import GenerationSettings, generate_images
    from engine.models.registry import ModelCache, resolve_source

    cache = ModelCache()
    info = cache.load(resolve_source({"source": str(DEFAULT_MODEL), "name": "toy"}), device="cpu")
    assert info["native_resolution"] == 64 and info["kind"] == "folder"
    settings = GenerationSettings("a yellow circle on a gray background", "", 5, 25, 7.5, 64, 64, "ddim", "toy")
    [image] = generate_images(cache.current, settings, 1)
    verdict = score_caption(np.asarray(image), settings.prompt)
    assert verdict["colour_ok"] and verdict["background_ok"], verdict


def test_shape_tokens_are_localised_and_keep_their_attention(toy):
    """The bar of the toy-world issue, on a small fixed set: each noun's map sits on its own
    object (measured on 100 held-out captions: 476× own/other, 11.0× in-mask/area, 2.45% share)."""
    from eval.toy_model_bars import two_object_metrics

    metrics = two_object_metrics(toy, 12)
    assert metrics["localisation_n"] >= 12
    assert metrics["own_over_other_median"] >= 2.0
    assert metrics["in_mask_over_area_median"] >= 2.0
    assert metrics["noun_attention_share_mean"] >= 0.01  # not a pin-prick: the shape word still steers
