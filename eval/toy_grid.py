"""The README's picture of the toy world: 16 captions, each with the image the model drew for it.

    python -m eval.toy_grid [--model resources/toy-world] [--out docs/toy-world-grid.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from eval.toy_model_bars import DEFAULT_MODEL, generate, load_pipeline

CAPTIONS = [
    "a red star on a blue background", "a photo of a green heart", "a yellow circle on a gray background",
    "a purple square on a white background", "a blue triangle on a green background", "a orange heart",
    "a red circle left of a blue square", "a yellow star above a purple heart",
    "a green triangle right of a orange circle", "a photo of a blue star on a white background",
    "a purple circle below a red triangle", "a orange square on a gray background",
    "a photo of a yellow heart on a blue background", "a green star", "a red square right of a yellow triangle",
    "a blue circle on a white background",
]


def render_grid(images: list[np.ndarray], captions: list[str], scale: int = 3, columns: int = 4) -> Image.Image:
    cell_w, cell_h = 64 * scale, 64 * scale + 34
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w + (columns + 1) * 8, rows * cell_h + (rows + 1) * 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = 8 + (i % columns) * (cell_w + 8), 8 + (i // columns) * (cell_h + 8)
        sheet.paste(Image.fromarray(image).resize((64 * scale, 64 * scale), Image.NEAREST), (x, y))
        words, line, lines = caption.split(), "", []
        for word in words:  # wrap to the cell width (the default font is ~6 px per character)
            if len(line) + len(word) + 1 > cell_w // 6:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for k, text in enumerate(lines[:2]):
            draw.text((x, y + 64 * scale + 3 + 14 * k), text, fill=(30, 30, 30))
    return sheet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=Path("docs/toy-world-grid.png"))
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args(argv)
    images, _ = generate(load_pipeline(args.model), CAPTIONS, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    render_grid(images, CAPTIONS).save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
