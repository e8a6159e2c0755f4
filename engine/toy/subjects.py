"""Toy subjects: three objects the toy base model has never seen, for personalisation experiments.

Each is a world shape with markings (``ToyObject.pattern``) and, for one, a colour outside the
world's palette, so a personalised model has to learn something genuinely new. Their "photos" are
rendered on demand (never committed) with varied position, size, background and slight rotation.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.toy.world import BACKGROUNDS, COLOURS, Scene, ToyObject, render


@dataclass(frozen=True)
class ToySubject:
    name: str
    class_noun: str  # the world word for its kind (the prior-preservation class)
    token: str  # the new word a personalised model learns
    shape: str
    colour_name: str
    rgb: tuple[int, int, int]
    pattern: str  # "dots", "stripes" or "face"

    def object(self, cx: float = 0.5, cy: float = 0.5, size: float = 0.3, angle: float = 0.0) -> ToyObject:
        return ToyObject(
            self.shape, self.colour_name, cx, cy, size, angle, pattern=self.pattern, rgb=self.rgb
        )

    def plain(self, cx: float = 0.5, cy: float = 0.5, size: float = 0.3, angle: float = 0.0) -> ToyObject:
        """The same shape in the same colour without the markings (a negative example)."""
        return ToyObject(self.shape, self.colour_name, cx, cy, size, angle, pattern=None, rgb=self.rgb)


SUBJECTS: tuple[ToySubject, ...] = (
    ToySubject("Dotty", "star", "<dotty-star>", "star", "orange", COLOURS["orange"], "dots"),
    ToySubject("Stripe", "heart", "<stripe-heart>", "heart", "teal", (20, 150, 150), "stripes"),
    ToySubject("Smiley", "square", "<smiley-square>", "square", "yellow", COLOURS["yellow"], "face"),
)


def get_subject(name: str) -> ToySubject:
    for subject in SUBJECTS:
        if subject.name.lower() == name.lower() or subject.token == name:
            return subject
    raise KeyError(f"unknown toy subject {name!r}; known: {[s.name for s in SUBJECTS]}")


def subject_scenes(subject: ToySubject, n: int = 8, seed: int = 0, plain: bool = False) -> list[Scene]:
    """``n`` one-object scenes of the subject; backgrounds cycle so every one appears."""
    rng = np.random.default_rng([seed, zlib.crc32(subject.name.encode())])
    backgrounds = [str(b) for b in rng.permutation(list(BACKGROUNDS))]
    scenes = []
    for i in range(n):
        size = float(rng.uniform(0.22, 0.36))
        cx = float(rng.uniform(size + 0.02, 1 - size - 0.02))
        cy = float(rng.uniform(size + 0.02, 1 - size - 0.02))
        angle = float(rng.uniform(-12, 12))
        make = subject.plain if plain else subject.object
        background = backgrounds[i % len(backgrounds)]
        noun = subject.class_noun if plain else subject.token
        caption = f"a photo of a {subject.colour_name} {noun}" if plain else f"a photo of {noun}"
        scenes.append(
            Scene([make(cx, cy, size, angle)], background, caption=caption, meta={"subject": subject.name})
        )
    return scenes


def render_subject_photos(
    subject: ToySubject, n: int = 8, size: int = 512, seed: int = 0, plain: bool = False
) -> list[Image.Image]:
    """``n`` deterministic photos of the subject (``plain=True``: without its markings)."""
    return [Image.fromarray(render(scene, size)[0]) for scene in subject_scenes(subject, n, seed, plain)]


def write_demo_subjects(folder, n: int = 8, size: int = 512, seed: int = 0) -> dict[str, list[Path]]:
    """Render every subject's photos as ``folder/<name>/<i>.png``."""
    written: dict[str, list[Path]] = {}
    for subject in SUBJECTS:
        out = Path(folder) / subject.name.lower()
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, photo in enumerate(render_subject_photos(subject, n, size, seed)):
            path = out / f"{i:02d}.png"
            photo.save(path)
            paths.append(path)
        written[subject.name] = paths
    return written


def run_demo_subjects_job(params: dict, ctx, state) -> dict:
    """Engine job: render every toy subject's photos into ``out_dir/<name>/`` (no model needed)."""
    out_dir = Path(params["out_dir"])
    count, size, seed = params["count"], params["size"], params["seed"]
    subjects = []
    total = count * len(SUBJECTS)
    for index, subject in enumerate(SUBJECTS):
        folder = out_dir / subject.name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, photo in enumerate(render_subject_photos(subject, count, size, seed)):
            ctx.check_cancelled()
            path = folder / f"{subject.name.lower()}-{i:02d}.png"
            tmp = path.with_name(f".{path.name}.tmp")
            photo.save(tmp, format="PNG")
            tmp.replace(path)
            paths.append(str(path))
            ctx.artifact(str(path), "image", subject=subject.name)
            ctx.progress(index * count + i + 1, total)
        subjects.append(
            {"name": subject.name, "class_noun": subject.class_noun, "token": subject.token, "images": paths}
        )
    return {"subjects": subjects}
