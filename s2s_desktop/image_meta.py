"""Reading the parameters our PNGs carry (the AUTOMATIC1111 ``parameters`` text chunk)."""

from __future__ import annotations

from pathlib import Path


def parse_parameters(text: str) -> dict:
    """Prompt, negative prompt and the ``Key: value`` pairs of an A1111 parameters text."""
    lines = text.split("\n")
    settings_line = lines[-1] if len(lines) > 1 and ": " in lines[-1] else ""
    body = lines[:-1] if settings_line else lines
    negative = ""
    prompt_lines: list[str] = []
    for i, line in enumerate(body):
        if line.startswith("Negative prompt:"):
            negative = "\n".join([line[len("Negative prompt:") :].strip()] + body[i + 1 :])
            break
        prompt_lines.append(line)
    out = {"prompt": "\n".join(prompt_lines), "negative_prompt": negative}
    for pair in settings_line.split(", "):
        if ": " in pair:
            key, value = pair.split(": ", 1)
            out[key.strip()] = value.strip()
    return out


def read_parameters(path: str | Path) -> str:
    """The raw parameters text of a PNG ('' if it has none). Pillow, so it works without Qt."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.info.get("parameters", ""))
    except (OSError, ValueError, Image.DecompressionBombError):  # a bomb is refused by Pillow on open
        return ""


def generated_source(parameters: dict, native_resolution: int | None) -> tuple[bool, str]:
    """Whether a PNG's A1111 parameters let the edit regenerate it exactly (prompt + seed with
    DDIM, at its own size), and if not, why."""
    if not parameters.get("prompt") or not parameters.get("Seed", "").isdigit():
        return False, "it carries no prompt and seed"
    if parameters.get("Sampler", "DDIM") != "DDIM":
        return False, f"it was sampled with {parameters['Sampler']}; edits regenerate with DDIM"
    if parameters.get("Size") and generated_size(parameters) is None:
        return False, f"its size {parameters['Size']!r} is not one the model can regenerate"
    return True, ""


def generated_size(parameters: dict) -> tuple[int, int] | None:
    """(width, height) from an A1111 "Size: WxH" when the model's grid (multiples of 8) fits it."""
    width, _, height = parameters.get("Size", "").partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) % 8 or int(height) % 8:
        return None
    return int(width), int(height)
