"""The toy world: procedural scenes of coloured shapes, with captions and ground truth.

Deterministic by seed. Rendering is supersampled (drawn at 4× and box-filtered down) so edges are
anti-aliased like a photo; masks are the supersampled coverage thresholded at one half.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 30),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "purple": (135, 50, 185),
}
# Backgrounds are pale/neutral so an object never vanishes into its background.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 242),
    "gray": (150, 150, 150),
    "blue": (165, 200, 240),
    "green": (170, 215, 160),
}
RELATIONS = ("left of", "right of", "above", "below")
SUPERSAMPLE = 4


@dataclass
class ToyObject:
    shape: str
    colour: str
    cx: float  # centre, fraction of the image width
    cy: float
    size: float  # half-extent, fraction of the image width
    angle: float = 0.0  # degrees
    pattern: str | None = None  # subjects only: "dots", "stripes", "face"
    rgb: tuple[int, int, int] | None = None  # overrides COLOURS[colour] (subjects' own colours)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.cx - self.size, self.cy - self.size, self.cx + self.size, self.cy + self.size)


@dataclass
class Scene:
    objects: list[ToyObject]
    background: str
    caption: str = ""
    relation: str | None = None  # for two objects: objects[0] <relation> objects[1]
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------ geometry


def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float = 0.0, points: int = 64) -> list:
    """Outline of a shape as (x, y) points in pixels."""
    if shape == "circle":
        pts = [(math.cos(2 * math.pi * i / points), math.sin(2 * math.pi * i / points)) for i in range(points)]
    elif shape == "square":
        s = 0.85
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        pts = [(math.cos(math.radians(a)), math.sin(math.radians(a)) + 0.15) for a in (-90, 30, 150)]
    elif shape == "star":
        pts = []
        for i in range(10):
            radius = 1.0 if i % 2 == 0 else 0.42
            a = math.radians(-90 + 36 * i)
            pts.append((radius * math.cos(a), radius * math.sin(a) + 0.05))
    elif shape == "heart":
        pts = []
        for i in range(points):
            t = 2 * math.pi * i / points
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 17.0, -y / 17.0 + 0.1))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _draw_pattern(draw: ImageDraw.ImageDraw, obj: ToyObject, px: float, py: float, pr: float) -> None:
    """Subject markings, drawn in white/black over the body (clipped by the caller's mask)."""
    if obj.pattern == "dots":
        step = pr * 0.38  # dense enough that several dots land inside the star's arms
        dot = pr * 0.12
        for i in range(-5, 6):
            for j in range(-5, 6):
                x, y = px + i * step + (j % 2) * step / 2, py + j * step * 0.9
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=(255, 255, 255))
    elif obj.pattern == "stripes":
        width = pr * 0.16
        ca, sa = math.cos(math.radians(obj.angle + 35)), math.sin(math.radians(obj.angle + 35))
        for k in range(-6, 7):
            off = k * width * 2.2
            x0, y0 = px + off * ca - 2 * pr * sa, py + off * sa + 2 * pr * ca
            x1, y1 = px + off * ca + 2 * pr * sa, py + off * sa - 2 * pr * ca
            draw.line((x0, y0, x1, y1), fill=(255, 255, 255), width=max(1, int(width)))
    elif obj.pattern == "face":
        eye = pr * 0.12
        for dx in (-0.32, 0.32):
            x, y = px + dx * pr, py - 0.2 * pr
            draw.ellipse((x - eye, y - eye, x + eye, y + eye), fill=(20, 20, 20))
        draw.arc(
            (px - 0.42 * pr, py - 0.25 * pr, px + 0.42 * pr, py + 0.45 * pr),
            start=20, end=160, fill=(20, 20, 20), width=max(1, int(pr * 0.09)),
        )


def render(scene: Scene, size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """RGB uint8 (size, size, 3) and one boolean mask per object (later objects occlude earlier)."""
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    coverage: list[np.ndarray] = []
    for obj in scene.objects:
        px, py, pr = obj.cx * big, obj.cy * big, obj.size * big
        polygon = shape_polygon(obj.shape, px, py, pr, obj.angle)
        mask_img = Image.new("L", (big, big), 0)
        ImageDraw.Draw(mask_img).polygon(polygon, fill=255)
        body = Image.new("RGB", (big, big), obj.rgb or COLOURS[obj.colour])
        if obj.pattern:
            _draw_pattern(ImageDraw.Draw(body), obj, px, py, pr)
        canvas.paste(body, (0, 0), mask_img)
        this = np.asarray(mask_img, dtype=np.float32) / 255.0
        coverage = [c * (1.0 - this) for c in coverage]  # occlusion
        coverage.append(this)
    image = np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.uint8)
    masks = [_downsample(c, size) >= 0.5 for c in coverage]
    return image, masks


def _downsample(coverage: np.ndarray, size: int) -> np.ndarray:
    factor = coverage.shape[0] // size
    return coverage.reshape(size, factor, size, factor).mean(axis=(1, 3))


# ------------------------------------------------------------------------------------ sampling


def _place(rng: np.random.Generator, size_range=(0.14, 0.3), box=(0.0, 1.0, 0.0, 1.0)) -> tuple:
    size = float(rng.uniform(*size_range))
    x0, x1, y0, y1 = box
    cx = float(rng.uniform(x0 + size, x1 - size))
    cy = float(rng.uniform(y0 + size, y1 - size))
    return cx, cy, size


def sample_object(rng: np.random.Generator, exclude: tuple[str, str] | None = None, **place) -> ToyObject:
    while True:
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        if (shape, colour) != exclude:
            break
    cx, cy, size = _place(rng, **place)
    return ToyObject(shape, colour, cx, cy, size, angle=float(rng.uniform(-15, 15)))


def sample_scene(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    """One object (50%) or two in a spatial relation (50%), with a caption."""
    n_objects = n_objects or int(rng.integers(1, 3))
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    if n_objects == 1:
        obj = sample_object(rng, size_range=(0.16, 0.36))
        scene = Scene([obj], background)
    else:
        relation = RELATIONS[rng.integers(len(RELATIONS))]
        # first object in one half, second in the other, so the relation is true by construction
        halves = {
            "left of": ((0.0, 0.5, 0.0, 1.0), (0.5, 1.0, 0.0, 1.0)),
            "right of": ((0.5, 1.0, 0.0, 1.0), (0.0, 0.5, 0.0, 1.0)),
            "above": ((0.0, 1.0, 0.0, 0.5), (0.0, 1.0, 0.5, 1.0)),
            "below": ((0.0, 1.0, 0.5, 1.0), (0.0, 1.0, 0.0, 0.5)),
        }[relation]
        first = sample_object(rng, size_range=(0.12, 0.22), box=halves[0])
        second = sample_object(rng, exclude=(first.shape, first.colour), size_range=(0.12, 0.22), box=halves[1])
        scene = Scene([first, second], background, relation=relation)
    scene.caption = caption(scene, rng)
    return scene


PATTERNS = ("dots", "stripes", "face")


def sample_marked_scene(rng: np.random.Generator, marked: float = 0.75, off_palette: float = 0.4) -> Scene:
    """A world scene whose objects carry markings and colours outside the palette (VAE data only).

    The autoencoder must be able to draw what personalisation teaches (a dotted star, a teal heart),
    not only the plain world the UNet learns, so its training mixes these in. Captions are unused.
    """
    scene = sample_scene(rng)
    for obj in scene.objects:
        if rng.random() < marked:
            obj.pattern = PATTERNS[rng.integers(len(PATTERNS))]
        if rng.random() < off_palette:
            obj.rgb = tuple(int(c) for c in rng.integers(0, 256, 3))
    return scene


SINGLE_TEMPLATES = (
    "a {c} {s} on a {bg} background",
    "a photo of a {c} {s}",
    "a {c} {s}",
    "a photo of a {c} {s} on a {bg} background",
)
PAIR_TEMPLATES = (
    "a {c1} {s1} {rel} a {c2} {s2} on a {bg} background",
    "a {c1} {s1} {rel} a {c2} {s2}",
)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    if len(scene.objects) == 1:
        obj = scene.objects[0]
        template = SINGLE_TEMPLATES[rng.integers(len(SINGLE_TEMPLATES))]
        return template.format(c=obj.colour, s=obj.shape, bg=scene.background)
    a, b = scene.objects
    template = PAIR_TEMPLATES[rng.integers(len(PAIR_TEMPLATES))]
    return template.format(c1=a.colour, s1=a.shape, rel=scene.relation, c2=b.colour, s2=b.shape, bg=scene.background)


def vocabulary() -> list[str]:
    """Every word a caption can contain (the tokenizer makes each one a single token)."""
    words = set(SHAPES) | set(COLOURS) | set(BACKGROUNDS)
    for template in SINGLE_TEMPLATES + PAIR_TEMPLATES:
        words |= {w for w in template.replace("{rel}", "").split() if not w.startswith("{")}
    for relation in RELATIONS:
        words |= set(relation.split())
    words |= {"next", "to", "the", "an", "and", "with", "in", "small", "big", "shape", "object", "thing"}
    return sorted(words)
