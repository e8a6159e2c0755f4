"""The toy world: deterministic by seed, masks that match the shapes, captions that name the objects."""

from __future__ import annotations

import numpy as np
import pytest

from engine.toy.world import (
    BACKGROUNDS,
    COLOURS,
    RELATIONS,
    SHAPES,
    Scene,
    ToyObject,
    render,
    sample_scene,
    shape_polygon,
    vocabulary,
)


def polygon_area(points) -> float:
    p = np.asarray(points)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum()))


def test_same_seed_same_scene_and_pixels():
    for seed in range(5):
        a = sample_scene(np.random.default_rng(seed))
        b = sample_scene(np.random.default_rng(seed))
        assert a == b
        img_a, masks_a = render(a, 64)
        img_b, masks_b = render(b, 64)
        assert np.array_equal(img_a, img_b)
        assert all(np.array_equal(x, y) for x, y in zip(masks_a, masks_b, strict=True))


def test_different_seeds_differ():
    images = [render(sample_scene(np.random.default_rng(seed)), 64)[0] for seed in range(4)]
    assert len({img.tobytes() for img in images}) == 4


def test_render_shapes_and_types():
    scene = sample_scene(np.random.default_rng(3), n_objects=2)
    image, masks = render(scene, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert len(masks) == 2 and all(m.shape == (64, 64) and m.dtype == bool for m in masks)


@pytest.mark.parametrize("shape", SHAPES)
def test_mask_matches_shape_area_and_colour(shape):
    size, px = 0.3, 128
    scene = Scene([ToyObject(shape, "red", 0.5, 0.5, size, angle=7.0)], "white")
    image, (mask,) = render(scene, px)
    expected = polygon_area(shape_polygon(shape, 0.5 * px, 0.5 * px, size * px, 7.0))
    assert abs(mask.sum() - expected) / expected < 0.03
    # inside the mask (2 px from the rim: sharp tips and cusps anti-alias over 2 px) the pixels are
    # the object's colour; outside it, the background's
    inner = ~_grow(_grow(~mask))
    assert np.abs(image[inner].astype(int) - COLOURS["red"]).max() <= 1
    outer = ~_grow(_grow(mask))
    assert np.abs(image[outer].astype(int) - BACKGROUNDS["white"]).max() <= 1


def _grow(mask: np.ndarray) -> np.ndarray:
    """Dilation by the 3x3 neighbourhood (the image border counts as False)."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.logical_or.reduce([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


def test_later_objects_occlude_earlier():
    scene = Scene(
        [ToyObject("square", "blue", 0.45, 0.5, 0.25), ToyObject("circle", "red", 0.6, 0.5, 0.2)], "white"
    )
    _, (back, front) = render(scene, 64)
    # coverage exactly 0.5 on both sides of the boundary can put a rim pixel in both masks
    assert (back & front).sum() <= 4
    full_back = render(Scene(scene.objects[:1], "white"), 64)[1][0]
    assert back.sum() < full_back.sum()


def test_captions_name_the_objects_and_relation():
    words = set(vocabulary())
    for seed in range(40):
        scene = sample_scene(np.random.default_rng(seed))
        text = scene.caption
        for obj in scene.objects:
            assert f"{obj.colour} {obj.shape}" in text
        if len(scene.objects) == 2:
            assert scene.relation in RELATIONS and f" {scene.relation} " in text
            assert text.index(scene.objects[0].shape) < text.index(scene.relation)
        if "background" in text:
            assert f"{scene.background} background" in text
        assert set(text.split()) <= words


def test_two_object_relation_true_by_construction():
    for seed in range(40):
        scene = sample_scene(np.random.default_rng(seed), n_objects=2)
        _, masks = render(scene, 64)
        (ay, ax), (by, bx) = (np.argwhere(m).mean(0) for m in masks)
        holds = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}
        assert holds[scene.relation], (seed, scene.relation)
