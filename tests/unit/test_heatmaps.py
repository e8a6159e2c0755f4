"""The Edit page's heatmap arithmetic (Qt-free) on handcrafted heatmap files with known hot spots."""

from __future__ import annotations

import numpy as np
import pytest

from s2s_desktop.library.heatmaps import (
    COLORMAPS,
    HeatmapChoice,
    HeatmapError,
    attention_map,
    colorize,
    enlarge,
    load_heatmaps,
    overlay,
    render_overlay,
)
from tests.helpers.heatmaps import write_heatmaps

SOURCE = "a red star on a blue background"
TARGET = "a green star on a blue background"
STAR, RED, BACKGROUND = 2, 1, 6  # word indices


@pytest.fixture
def heatmaps(tmp_path):
    path = write_heatmaps(
        tmp_path / "edit-heatmaps.npz",
        {"source": SOURCE, "target": TARGET},
        hot={("target", STAR): (0.25, 0.25), ("target", RED): (0.75, 0.75), ("source", STAR): (0.5, 0.5)},
        strength={("target", STAR): 0.6, ("target", RED): 0.15},
        step_scale=[1.0, 0.5, 0.25, 0.1],
    )
    return load_heatmaps(path)


def peak(values: np.ndarray) -> tuple[float, float]:
    row, col = np.unravel_index(int(np.argmax(values)), values.shape)
    return (row + 0.5) / values.shape[0], (col + 0.5) / values.shape[1]


def test_the_file_is_read_with_its_steps_resolutions_layers_and_words(heatmaps):
    assert heatmaps.steps == 4
    assert heatmaps.resolutions == [8, 4]
    assert heatmaps.layers(8) == ["down_blocks.0.attentions.0", "down_blocks.1.attentions.0"]
    assert heatmaps.prompts == ["source", "target"]
    assert [w["word"] for w in heatmaps.words("target")][STAR] == "star"
    assert heatmaps.words("target")[STAR]["tokens"] == [STAR + 1]  # BOS is token 0


def test_the_overlay_is_hottest_over_the_words_hot_spot(heatmaps):
    image = np.full((64, 64, 3), 128, np.uint8)
    values, _ = attention_map(heatmaps, HeatmapChoice("target", (STAR,), layer=0))
    assert values.max() == pytest.approx(1.0)
    row, col = peak(values)
    assert abs(row - 0.25) < 0.13 and abs(col - 0.25) < 0.13

    pixels, _ = render_overlay(image, heatmaps, HeatmapChoice("target", (STAR,), layer=0), alpha=1.0, min_side=64)
    assert pixels.shape == (64, 64, 3)
    brightness = pixels.astype(float).sum(axis=2)
    row, col = peak(brightness)
    assert abs(row - 0.25) < 0.1 and abs(col - 0.25) < 0.1
    hottest = COLORMAPS["inferno"][255].astype(int)
    assert np.abs(pixels[16, 16].astype(int) - hottest).max() < 40  # the colour map's hot end
    assert brightness[56, 56] < brightness[16, 16] / 3  # far away it is cold


def test_source_words_are_looked_up_in_the_source_maps(heatmaps):
    values, _ = attention_map(heatmaps, HeatmapChoice("source", (STAR,), layer=0))
    row, col = peak(values)
    assert abs(row - 0.5) < 0.13 and abs(col - 0.5) < 0.13


def test_per_token_max_and_share_differ_as_expected(heatmaps):
    strong = HeatmapChoice("target", (STAR,), normalise="share", layer=0, steps=0)
    weak = HeatmapChoice("target", (RED,), normalise="share", layer=0, steps=0)
    strong_map, scale = attention_map(heatmaps, strong)
    weak_map, weak_scale = attention_map(heatmaps, weak)
    # share: one scale for every word, the strongest word's peak (0.6 of the attention)
    assert scale == weak_scale == pytest.approx(0.6, abs=0.01)
    assert strong_map.max() == pytest.approx(1.0, abs=0.01)
    assert weak_map.max() == pytest.approx(0.15 / 0.6, abs=0.02)
    # per-token max: each word to its own peak
    for index in (STAR, RED):
        values, own_peak = attention_map(heatmaps, HeatmapChoice("target", (index,), normalise="max", layer=0, steps=0))
        assert values.max() == pytest.approx(1.0)
    assert attention_map(heatmaps, HeatmapChoice("target", (RED,), layer=0, steps=0))[1] == pytest.approx(0.15, abs=0.01)


def test_several_words_show_both_hot_spots(heatmaps):
    values, _ = attention_map(heatmaps, HeatmapChoice("target", (STAR, RED), normalise="max", layer=0))
    assert values[2, 2] > 0.9 and values[5, 5] > 0.9  # (0.25, 0.25) and (0.75, 0.75) of an 8×8 map
    shares, _ = attention_map(heatmaps, HeatmapChoice("target", (STAR, RED), normalise="share", layer=0))
    assert shares[2, 2] > 3 * shares[5, 5]  # the weak word stays weak on the shared scale


def test_step_and_layer_selection_pick_the_right_slice(heatmaps):
    share = {"normalise": "share", "layer": 0}
    by_step = [attention_map(heatmaps, HeatmapChoice("target", (STAR,), steps=s, **share)) for s in range(4)]
    raw_peaks = [values.max() * scale for values, scale in by_step]
    assert raw_peaks == pytest.approx([0.6, 0.3, 0.15, 0.06], abs=0.01)  # step_scale 1, .5, .25, .1
    mean_all, scale = attention_map(heatmaps, HeatmapChoice("target", (STAR,), **share))
    assert mean_all.max() * scale == pytest.approx(np.mean([0.6, 0.3, 0.15, 0.06]), abs=0.01)
    window, scale = attention_map(heatmaps, HeatmapChoice("target", (STAR,), steps=(1, 2), **share))
    assert window.max() * scale == pytest.approx(0.225, abs=0.01)
    # layer 1 moves the bump right by 1/8 of the map; "all layers" lies between
    first = peak(attention_map(heatmaps, HeatmapChoice("target", (STAR,), layer=0))[0])
    second = peak(attention_map(heatmaps, HeatmapChoice("target", (STAR,), layer=1))[0])
    assert second[1] - first[1] == pytest.approx(1 / 8, abs=0.01)
    both = attention_map(heatmaps, HeatmapChoice("target", (STAR,), layer=None))[0]
    assert both[2, 2] > 0.5 and both[2, 3] > 0.5
    # the smaller resolution has its own maps
    small, _ = attention_map(heatmaps, HeatmapChoice("target", (STAR,), resolution=4, layer=0))
    assert small.shape == (4, 4) and small[:2, :2].min() > 0.9 > 0.1 > small[2:, 2:].max()  # (0.25, 0.25)


def test_no_words_or_unknown_words_give_an_empty_map(heatmaps):
    values, scale = attention_map(heatmaps, HeatmapChoice("target", ()))
    assert values.shape == (8, 8) and values.max() == 0 and scale == 0
    assert attention_map(heatmaps, HeatmapChoice("target", (99,)))[0].max() == 0
    with pytest.raises(HeatmapError, match="no negative maps"):
        attention_map(heatmaps, HeatmapChoice("negative", (0,)))


def test_colour_map_overlay_and_enlarging():
    assert colorize(np.array([0.0, 1.0])).tolist() == [[0, 0, 4], [252, 255, 164]]
    lightness = COLORMAPS["viridis"].astype(float) @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(lightness[::16]) > 0)  # perceptual: gets lighter all the way
    image = np.zeros((8, 8, 3), np.uint8)
    assert overlay(image, np.ones((2, 2), np.float32), alpha=0.0).max() == 0  # alpha 0: the picture
    assert enlarge(np.zeros((64, 64, 3), np.uint8), 512).shape == (512, 512, 3)
    assert enlarge(np.zeros((64, 48, 3), np.uint8), 512, smooth=False).shape == (704, 528, 3)
    assert enlarge(np.zeros((600, 600, 3), np.uint8), 512).shape == (600, 600, 3)


def test_unreadable_files_are_refused_with_a_reason(tmp_path):
    junk = tmp_path / "junk-heatmaps.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(HeatmapError, match="cannot be read"):
        load_heatmaps(junk)
    np.savez(tmp_path / "nometa.npz", target_8=np.zeros((1, 1, 3, 8, 8), np.float16))
    with pytest.raises(HeatmapError, match="no meta"):
        load_heatmaps(tmp_path / "nometa.npz")
