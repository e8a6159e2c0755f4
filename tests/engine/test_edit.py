"""The edit job's mechanics on the shipped toy-world model: token maps, re-render reuse, caches,
the heatmap file's contract, refusals. (What the edits *mean* is in test_edit_meaning.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from engine.attention.align import choose_mode, refine_map, replace_map, tokenize
from engine.attention.heatmaps import read_heatmaps
from engine.jobs import JobCancelled, JobFailed
from engine.protocol import ProtocolError, validate_job
from engine.toy import world
from eval.edit_meaning import DEFAULT_MODEL, EditSession, vae_round_trip_psnr

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "model_index.json").exists(), reason="toy model not present")
SWAP = {"source_prompt": "a red star on a blue background", "target_prompt": "a green star on a blue background"}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return EditSession(out_dir=tmp_path_factory.mktemp("edits"))


@pytest.fixture(scope="module")
def tokenizer(session):
    return session.loaded.pipeline.tokenizer


def test_words_map_to_their_clip_tokens(tokenizer):
    prompt = tokenize(tokenizer, "a red star, nice")  # "star," is 2 tokens, "nice" is 4 in the toy vocabulary
    assert [w.text for w in prompt.words] == ["a", "red", "star,", "nice"]
    assert prompt.words[2].tokens == (3, 4) and len(prompt.words[3].tokens) == 4
    assert prompt.positions_of("STAR") == [3, 4]  # case and punctuation ignored
    assert prompt.eos == len(prompt.ids) - 1 == 9


def test_replace_map_pairs_words_and_keeps_padding_order(tokenizer):
    source, target = tokenize(tokenizer, "a red star"), tokenize(tokenizer, "a red nice")
    matrix = np.array(replace_map(source, target))
    assert matrix[2, 2] == 1 and matrix[3, 3:7].tolist() == [1, 1, 1, 1]  # 1 token → 4 tokens: shared
    assert matrix[source.eos, target.eos] == 1  # EOS to EOS though positions differ
    assert np.allclose(matrix[:, : target.eos + 1].sum(0), 1)  # every target token gets one unit of attention


def test_refine_map_copies_kept_words_and_leaves_new_ones_alone(tokenizer):
    source, target = tokenize(tokenizer, "a red star"), tokenize(tokenizer, "a red star on a blue background")
    mapper, alphas = refine_map(source, target)
    assert mapper[1:4] == [1, 2, 3] and alphas[1:4] == [1, 1, 1]
    assert alphas[4:8] == [0, 0, 0, 0]  # "on a blue background" is new
    assert mapper[target.eos] == source.eos


def test_mode_choice_falls_back_to_refine_with_a_note(tokenizer):
    a, b = tokenize(tokenizer, "a red star"), tokenize(tokenizer, "a red star on a blue background")
    assert choose_mode("auto", a, b) == ("refine", [])
    mode, notes = choose_mode("replace", a, b)
    assert mode == "refine" and "same number of words" in notes[0]
    assert choose_mode("auto", a, a)[0] == "same"


def test_edit_params_are_checked():
    for bad in ({"cross_steps": [0.6, 0.2]}, {"self_steps": 1.5}, {"reweight": {"red": 9}},
                {"adapter": {"scale": 1}}, {"invert": "magic"}):
        with pytest.raises(ProtocolError):
            validate_job("edit", {"source_prompt": "x", "out_dir": "/tmp", **bad})


def test_heatmap_file_follows_the_contract(session):
    result = session.edit(**SWAP, negative_prompt="a square")
    meta, arrays = read_heatmaps(result["heatmaps"])
    assert meta["version"] == 1 and meta["steps"] == 25 and meta["resolutions"] == [16, 8]
    assert set(meta["prompts"]) == {"source", "target", "negative"}
    target = meta["prompts"]["target"]
    assert target["words"][1] == {"word": "green", "tokens": [2]} and target["tokens"][0] == "<|startoftext|>"
    maps = arrays["target_16"]
    assert maps.dtype == np.float16 and maps.shape == (25, len(meta["layers"]["16"]), len(target["tokens"]), 16, 16)
    assert arrays["source_8"].shape[-2:] == (8, 8)
    total = maps.astype(np.float32).sum(axis=(2,))  # shares of the 77 tokens: ≤ 1 per pixel
    assert total.max() <= 1.001 and total.mean() > 0.01  # the rest went to padding tokens
    assert result["target_words"] == target["words"]


def test_rerender_reuses_the_source_branch(session):
    first = session.edit(**SWAP, seed=3)
    again = session.edit(**SWAP, seed=3, reweight={"green": 2.0})
    assert not first["reused_source"] and again["reused_source"]
    assert again["original"] != first["original"]
    assert np.array_equal(np.asarray(Image.open(again["original"])), np.asarray(Image.open(first["original"])))
    longer_self = session.edit(**SWAP, seed=3, self_steps=0.7)  # more self-attention than was recorded
    assert not longer_self["reused_source"]


def test_rerender_matches_a_full_edit(session, tmp_path):
    """The target-only re-render gives the same picture as computing both branches afresh."""
    cached = session.edit(**SWAP, seed=5)
    cached = session.edit(**SWAP, seed=5, reweight={"star": 1.5}, blend_words=["star"])
    fresh = EditSession(out_dir=tmp_path).edit(**SWAP, seed=5, reweight={"star": 1.5}, blend_words=["star"])
    assert cached["reused_source"] and not fresh["reused_source"]
    a, b = (np.asarray(Image.open(r["edited"])).astype(int) for r in (cached, fresh))
    assert np.abs(a - b).max() <= 2


def test_inversion_is_cached_and_reconstruction_reported(session, tmp_path):
    scene = world.Scene([world.ToyObject("heart", "red", 0.4, 0.5, 0.25)], "white", "a red heart on a white background")
    pixels, _ = world.render(scene, 160)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).crop((0, 20, 160, 140)).save(path)  # 4:3, larger than the model's size
    first = session.edit(source_prompt=scene.caption, image=str(path), heatmaps=False)
    second = session.edit(source_prompt=scene.caption, target_prompt="a red star on a white background",
                          image=str(path), heatmaps=False)
    assert not first["inversion_cached"] and second["inversion_cached"]
    original = np.asarray(Image.open(first["original"]))
    assert original.shape[:2] == (48, 64)  # longer side to the model's size, grid multiples
    # direct inversion is exact: what is lost is the autoencoder's round trip, nothing more
    assert first["reconstruction_psnr"] >= vae_round_trip_psnr(session, original) - 0.05 > 25


def test_bad_input_is_refused_with_a_reason(session, tmp_path):
    with pytest.raises(JobFailed) as too_long:
        session.edit(source_prompt=" ".join(["red star"] * 60))
    assert too_long.value.code == "prompt_too_long"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(JobFailed) as unreadable:
        session.edit(source_prompt="a red star", image=str(broken))
    assert unreadable.value.code == "bad_image" and "PNG, JPEG" in unreadable.value.hint


def test_notes_tell_what_was_not_used(session):
    result = session.edit(source_prompt="a red star", target_prompt="a red star on a blue background",
                          mode="replace", reweight={"purple": 2.0})
    assert result["mode"] == "refine"
    assert any("same number of words" in n for n in result["notes"])
    assert any("'purple' is not in the target prompt" in n for n in result["notes"])


def test_cancel_stops_between_steps(session):
    from engine.edit import run_edit_job

    class CancelAt:
        calls = 0

        def check_cancelled(self):
            self.calls += 1
            if self.calls > 3:
                raise JobCancelled()

        def progress(self, *a, **k):
            return True

        def artifact(self, *a, **k):
            pass

    params = validate_job("edit", {**SWAP, "seed": 9, "out_dir": str(session.out_dir), "steps": 25})
    with pytest.raises(JobCancelled):
        run_edit_job(params, CancelAt(), session.state)
    unet = session.loaded.pipeline.unet
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in unet.attn_processors.values())  # uninstalled
    json.dumps(session.edit(**SWAP, seed=9))  # and the next edit runs


def test_a_longer_cross_window_than_recorded_recomputes_the_source(session):
    session.edit(**SWAP, seed=11, cross_steps=0.5)
    assert session.edit(**SWAP, seed=11, cross_steps=0.4)["reused_source"]
    assert not session.edit(**SWAP, seed=11, cross_steps=0.9)["reused_source"]
    assert session.edit(**SWAP, seed=11, cross_steps=0.9, reweight={"green": 2})["reused_source"]


def test_generated_source_size_follows_width_and_height(session):
    result = session.edit(**SWAP, seed=1, width=96, height=64, steps=4)
    assert Image.open(result["edited"]).size == (96, 64)
    with pytest.raises(JobFailed) as off_grid:
        session.edit(**SWAP, width=70, height=64, steps=4)
    assert "multiples of 8" in off_grid.value.hint
