"""The toy evaluator, measured on fixed held-out scenes (seeds 10_000+, never used for training).

Thresholds are the accuracies measured by ``python -m eval.evaluator_accuracy`` minus a small
margin (measured: 100% shape/colour/count, mask IoU 0.98 clean / 0.95 blurred+noisy on 1000 scenes
at 64 px; on these 150 scenes the same).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.toy.evaluator import analyse, detect, fill_holes, label
from engine.toy.scoring import parse_caption, score_caption, subject_present
from engine.toy.subjects import SUBJECTS, get_subject, render_subject_photos, write_demo_subjects
from engine.toy.world import BACKGROUNDS, Scene, ToyObject, render
from eval.evaluator_accuracy import NOISE_SEED, degrade, held_out_scene, score_scene

N_SCENES = 150


def _summary(rows: list[dict]) -> dict[str, float]:
    return {
        "shape": float(np.mean([v for r in rows for v in r["shape"]])),
        "colour": float(np.mean([v for r in rows for v in r["colour"]])),
        "iou": float(np.mean([v for r in rows for v in r["iou"]])),
        "background": float(np.mean([r["background"] for r in rows])),
        "count": float(np.mean([r["count"] for r in rows])),
        "relation": float(np.mean([r["relation"] for r in rows if r["relation"] is not None])),
    }


@pytest.fixture(scope="module")
def held_out():
    out = []
    for i in range(N_SCENES):
        scene = held_out_scene(i)
        image, masks = render(scene, 64)
        out.append((i, scene, image, masks))
    return out


def test_accuracy_clean_64px(held_out):
    s = _summary([score_scene(scene, image, masks) for _, scene, image, masks in held_out])
    assert s["shape"] >= 0.98 and s["colour"] >= 0.98, s
    assert s["iou"] >= 0.95, s
    assert s["background"] >= 0.99 and s["count"] >= 0.98 and s["relation"] >= 0.98, s


def test_accuracy_blurred_noisy_64px(held_out):
    rows = [score_scene(scene, degrade(image, NOISE_SEED + i), masks) for i, scene, image, masks in held_out]
    s = _summary(rows)
    assert s["shape"] >= 0.97 and s["colour"] >= 0.97, s
    assert s["iou"] >= 0.92, s
    assert s["background"] >= 0.99 and s["count"] >= 0.97, s


def test_detection_fields():
    scene = Scene([ToyObject("triangle", "purple", 0.3, 0.6, 0.2, angle=5.0)], "gray")
    image, (mask,) = render(scene, 64)
    analysis = analyse(image)
    assert analysis.background == "gray"
    (det,) = analysis.detections
    assert (det.shape, det.colour, det.pattern) == ("triangle", "purple", "none")
    assert det.mask.shape == (64, 64) and det.mask.dtype == bool
    x0, y0, x1, y1 = det.box
    assert (x0, y0, x1, y1) == (
        np.nonzero(det.mask.any(0))[0][0],
        np.nonzero(det.mask.any(1))[0][0],
        np.nonzero(det.mask.any(0))[0][-1] + 1,
        np.nonzero(det.mask.any(1))[0][-1] + 1,
    )
    assert det.area_fraction == pytest.approx(det.mask.mean())
    assert 0.9 <= det.confidence <= 1.0
    assert abs(det.centroid[0] - 0.3) < 0.05 and abs(det.centroid[1] - 0.6) < 0.08
    assert (det.mask & mask).sum() / (det.mask | mask).sum() > 0.9


def test_empty_image_has_no_detections():
    for name, rgb in BACKGROUNDS.items():
        image = np.full((64, 64, 3), rgb, dtype=np.uint8)
        analysis = analyse(image)
        assert analysis.background == name and analysis.detections == []
    assert detect(Image.new("RGB", (64, 64), BACKGROUNDS["blue"])) == []


def test_works_at_512px():
    scene = held_out_scene(1)  # two objects
    image, masks = render(scene, 512)
    row = score_scene(scene, image, masks)
    assert all(row["shape"]) and all(row["colour"]) and row["count"] and min(row["iou"]) > 0.95


def test_label_and_fill_holes():
    m = np.zeros((7, 9), dtype=bool)
    m[1:3, 1:3] = True  # block
    m[3, 3] = True  # touches the block diagonally
    m[5, 6:9] = True  # separate run
    lab8, n8 = label(m)
    lab4, n4 = label(m, connectivity=4)
    assert n8 == 2 and n4 == 3
    assert lab8[1, 1] == lab8[3, 3] != lab8[5, 7]
    ring = np.zeros((5, 5), dtype=bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    assert fill_holes(ring).all()


# ------------------------------------------------------------------------------------ captions


def test_parse_caption():
    spec = parse_caption("a red circle left of a blue star on a blue background")
    assert spec.objects == [("red", "circle"), ("blue", "star")]
    assert spec.relation == "left of" and spec.background == "blue"
    spec = parse_caption("a photo of a green heart")
    assert spec.objects == [("green", "heart")] and spec.relation is None and spec.background is None


def test_score_caption_single_object():
    scene = Scene([ToyObject("star", "orange", 0.5, 0.5, 0.3, angle=-6.0)], "green")
    image, _ = render(scene, 64)
    good = score_caption(image, "a orange star on a green background")
    assert good["colour_ok"] and good["shape_ok"] and good["background_ok"] and good["score"] == 1.0
    wrong = score_caption(image, "a red circle on a white background")
    assert not wrong["colour_ok"] and not wrong["shape_ok"] and not wrong["background_ok"]
    assert score_caption(image, "a orange circle")["shape_ok"] is False
    assert score_caption(image, "a orange circle")["colour_ok"] is True


def test_score_caption_relation():
    flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    checked = 0
    for i in range(1, 41, 2):  # two-object held-out scenes
        scene = held_out_scene(i)
        image, _ = render(scene, 64)
        analysis = analyse(image)
        a, b = scene.objects
        assert score_caption(analysis, scene)["relation_ok"] is True
        right = f"a {a.colour} {a.shape} {scene.relation} a {b.colour} {b.shape}"
        wrong = f"a {a.colour} {a.shape} {flip[scene.relation]} a {b.colour} {b.shape}"
        swapped = f"a {b.colour} {b.shape} {scene.relation} a {a.colour} {a.shape}"
        result = score_caption(analysis, right)
        assert result["relation_ok"] and result["objects_ok"] and result["count_ok"]
        assert score_caption(analysis, wrong)["relation_ok"] is False
        assert score_caption(analysis, swapped)["relation_ok"] is False
        checked += 1
    assert checked == 20


def test_score_caption_missing_object():
    scene = Scene([ToyObject("circle", "red", 0.25, 0.5, 0.15)], "white")
    image, _ = render(scene, 64)
    result = score_caption(image, "a red circle left of a blue square")
    assert result["count_ok"] is False and result["objects_ok"] is False and result["relation_ok"] is False


# ------------------------------------------------------------------------------------ subjects


@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.name)
def test_subject_present_on_its_photos_not_on_plain_lookalikes(subject):
    photos = render_subject_photos(subject, n=4, size=256, seed=1)
    plain = render_subject_photos(subject, n=4, size=256, seed=1, plain=True)
    for photo, lookalike in zip(photos, plain, strict=True):
        small = np.asarray(photo.resize((64, 64), Image.BOX))
        present, score = subject_present(small, subject)
        assert present and score > 0.8, (subject.name, score)
        assert not subject_present(np.asarray(lookalike.resize((64, 64), Image.BOX)), subject)[0]
        for other in SUBJECTS:
            if other is not subject:
                assert not subject_present(small, other)[0]


def test_subject_definitions_and_photos(tmp_path):
    assert {s.token for s in SUBJECTS} == {"<dotty-star>", "<stripe-heart>", "<smiley-square>"}
    assert get_subject("stripe").rgb == (20, 150, 150)
    for subject in SUBJECTS:
        assert subject.class_noun == subject.shape
    a = render_subject_photos(SUBJECTS[0], n=3, size=64, seed=5)
    b = render_subject_photos(SUBJECTS[0], n=3, size=64, seed=5)
    assert [p.tobytes() for p in a] == [p.tobytes() for p in b]
    assert len({p.tobytes() for p in a}) == 3 and a[0].size == (64, 64)
    written = write_demo_subjects(tmp_path, n=2, size=64)
    assert set(written) == {s.name for s in SUBJECTS}
    assert all(len(paths) == 2 and all(p.is_file() for p in paths) for paths in written.values())
