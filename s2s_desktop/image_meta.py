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
