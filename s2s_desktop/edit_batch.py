"""One edit, many pictures: the Edit page's "Edit a folder…" (Qt-free: the data model, each
picture's edit job parameters and the exports; the window is s2s_desktop/pages/edit_batch_view.py).

Every picture gets the Edit form's settings. A PNG this app made carries its prompt and seed
(A1111 ``parameters``), so it is regenerated exactly from them and the form's change is made to
its own prompt (after "Put … in": the subject put into its prompt the same way); any other
picture is inverted with the form's source and target prompts. The jobs run one
after another; a cancel stops after the running job and keeps what finished.
"""

from __future__ import annotations

import difflib
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from engine.protocol.editing import insertion_target, normalise_word, prompt_words
from s2s_desktop.image_meta import generated_size, generated_source, parse_parameters, read_parameters

WAITING, RUNNING, DONE, FAILED, CANCELLED, SKIPPED = "waiting", "running", "done", "failed", "cancelled", "skipped"
STATE_TITLES = {WAITING: "waiting", RUNNING: "editing…", DONE: "done", FAILED: "failed",
                CANCELLED: "cancelled", SKIPPED: "not started"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
GRID_NAME = "batch-grid.png"


class BatchError(ValueError):
    """A picture the batch cannot edit (the message says why)."""


def pictures_in(folder: str | Path) -> list[str]:
    """The pictures directly in a folder, by name (not its subfolders)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir(), key=lambda p: p.name.lower())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]


def carry_edit(source: str, target: str, prompt: str) -> tuple[str, bool]:
    """The change from ``source`` to ``target`` made to another ``prompt``: swapped words are swapped
    where the prompt has them, added words go in beside the same neighbour, removed words go.
    Returns (the new prompt, whether any of the change fitted it)."""
    if not target.strip():
        return "", True  # no target: the picture as it is (reweights and heatmaps only)
    src, tgt, words = prompt_words(source), prompt_words(target), prompt_words(prompt)
    key = [normalise_word(w) for w in src]
    if [normalise_word(w) for w in words] == key:
        return target.strip(), True
    fitted = False
    matcher = difflib.SequenceMatcher(a=key, b=[normalise_word(w) for w in tgt], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        have = [normalise_word(w) for w in words]
        if op in ("replace", "delete"):
            phrase = key[i1:i2]
            at = next((k for k in range(len(have) - len(phrase) + 1) if have[k:k + len(phrase)] == phrase), None)
            if at is not None:
                words[at:at + len(phrase)] = tgt[j1:j2]
                fitted = True
        else:  # insert: before the source's next word, or after its previous one
            at = None
            if i1 < len(key) and key[i1] in have:
                at = have.index(key[i1])
            elif i1 > 0 and key[i1 - 1] in have:
                at = have.index(key[i1 - 1]) + 1
            if at is not None:
                words[at:at] = tgt[j1:j2]
                fitted = True
    return " ".join(words), fitted


def picture_params(base: dict, picture: str, native_resolution: int | None = None,
                   insertion: dict | None = None) -> tuple[dict, str]:
    """One picture's edit job (``base``: the form's job parameters) and how its source is made
    ("regenerated" or "inverted"). Raises BatchError when the edit does not fit the picture."""
    parsed = parse_parameters(read_parameters(picture))
    exact, _why = generated_source(parsed, native_resolution)
    params = {k: v for k, v in base.items() if k not in ("width", "height", "invert", "name")}
    form_source, form_target = base.get("source_prompt", ""), base.get("target_prompt", "")
    if exact:
        prompt = parsed["prompt"].strip()
        params.update(source_prompt=prompt, negative_prompt=parsed.get("negative_prompt", "").strip(),
                      image="", seed=int(parsed["Seed"]) % 2**32)
        if parsed.get("Steps", "").isdigit():
            params["steps"] = int(parsed["Steps"])
        try:
            params["guidance"] = float(parsed.get("CFG scale", params.get("guidance", 7.5)))
        except ValueError:
            pass
        size = generated_size(parsed)
        if size:
            params["width"], params["height"] = size
        how = "regenerated"
    else:
        prompt = form_source
        if not prompt:
            raise BatchError("it carries no prompt: type what the pictures show as the source prompt")
        invert = base.get("invert") or "direct"
        params.update(image=str(picture), invert=invert)
        how = "inverted"
    same_prompt = [normalise_word(w) for w in prompt_words(prompt)] == [normalise_word(w) for w in
                                                                         prompt_words(form_source)]
    if not exact or same_prompt:
        pass  # the form's own prompt (or inverted with it): the form's target prompt as it is
    elif insertion:
        token, noun = insertion["token"], insertion["class_noun"]
        if token in prompt_words(prompt):
            raise BatchError(f"its prompt already has {token}")
        target = None
        for into in dict.fromkeys((insertion.get("into") or noun, noun)):
            try:
                target = insertion_target(prompt, into, token, noun)
                break
            except ValueError:
                continue
        if target is None:
            raise BatchError(f"its prompt “{prompt}” has no “{insertion.get('into') or noun}” or “{noun}” to replace")
        params["target_prompt"] = target
    else:
        target, fitted = carry_edit(form_source, form_target, prompt)
        if not fitted:
            raise BatchError(f"the change of the target prompt does not fit its prompt “{prompt}”")
        params["target_prompt"] = target
    return params, how


@dataclass
class BatchItem:
    picture: str
    params: dict | None = None  # None: it cannot be edited (``error`` says why)
    how: str = ""  # "regenerated" | "inverted"
    state: str = WAITING
    result: dict = field(default_factory=dict)
    error: str = ""

    @property
    def name(self) -> str:
        return Path(self.picture).name

    @property
    def original(self) -> str:
        return str(self.result.get("original") or "")

    @property
    def edited(self) -> str:
        return str(self.result.get("edited") or "")


class EditBatch:
    """The pictures of one batch and where each one stands; jobs run in order, one at a time."""

    def __init__(self, items: list[BatchItem]):
        self.items = items
        self.cancelled = False

    @classmethod
    def build(cls, pictures: list[str], base: dict, native_resolution: int | None = None,
              insertion: dict | None = None) -> EditBatch:
        items = []
        for picture in pictures:
            try:
                params, how = picture_params(base, picture, native_resolution, insertion)
                items.append(BatchItem(picture, params, how))
            except BatchError as exc:
                items.append(BatchItem(picture, state=FAILED, error=str(exc)))
        return cls(items)

    def next_index(self) -> int | None:
        if self.cancelled:
            return None
        return next((i for i, item in enumerate(self.items) if item.state == WAITING), None)

    def start(self, index: int) -> BatchItem:
        self.items[index].state = RUNNING
        return self.items[index]

    def finish(self, index: int, result: dict) -> None:
        item = self.items[index]
        item.result = dict(result)
        item.state = DONE if item.edited else FAILED
        item.error = "" if item.edited else "the engine made no edited picture"

    def fail(self, index: int, message: str) -> None:
        self.items[index].state, self.items[index].error = FAILED, message

    def end_cancelled(self, index: int) -> None:
        self.items[index].state = CANCELLED

    def cancel(self) -> None:
        """No more jobs start; the waiting pictures are left out (the running one is cancelled by the
        caller and ends as ``cancelled``)."""
        self.cancelled = True
        for item in self.items:
            if item.state == WAITING:
                item.state = SKIPPED

    def running(self) -> int | None:
        return next((i for i, item in enumerate(self.items) if item.state == RUNNING), None)

    @property
    def over(self) -> bool:
        return all(item.state not in (WAITING, RUNNING) for item in self.items)

    def done(self) -> list[BatchItem]:
        return [item for item in self.items if item.state == DONE]

    def count(self, state: str) -> int:
        return sum(1 for item in self.items if item.state == state)

    def summary(self) -> str:
        total, done = len(self.items), self.count(DONE)
        if not self.over:
            return f"{done} of {total} pictures edited"
        parts = [f"{done} of {total} pictures edited"]
        for state, word in ((FAILED, "failed"), (CANCELLED, "cancelled"), (SKIPPED, "not started")):
            if self.count(state):
                parts.append(f"{self.count(state)} {word}")
        return ", ".join(parts) + "."

    # ------------------------------------------------------------------ exports
    def grid_image(self, cell: int = 160):
        """The finished pictures as rows: the name, the original, the edited picture."""
        from PIL import Image, ImageDraw

        from s2s_desktop.reports import _font

        rows = self.done()
        name_px, pad, header = 200, 6, 30
        width = name_px + 2 * (cell + pad) + pad
        height = header + max(len(rows), 1) * (cell + pad) + pad
        canvas = Image.new("RGB", (width, height), (250, 250, 250))
        draw = ImageDraw.Draw(canvas)
        font, small = _font(14), _font(12)
        for i, title in enumerate(("original", "edited")):
            draw.text((name_px + pad + i * (cell + pad), 8), title, fill=(20, 20, 20), font=font)
        for r, item in enumerate(rows):
            y = header + r * (cell + pad)
            text = item.name + "\n" + (item.params or {}).get("target_prompt", "")
            lines = textwrap.wrap(text, width=26)[: max(1, cell // 16)]
            draw.multiline_text((pad, y + 4), "\n".join(lines), fill=(30, 30, 30), font=small, spacing=3)
            for i, path in enumerate((item.original or item.picture, item.edited)):
                x = name_px + pad + i * (cell + pad)
                try:
                    with Image.open(path) as im:
                        im = im.convert("RGB")
                        im.thumbnail((cell, cell), Image.Resampling.LANCZOS)
                        if max(im.size) < cell:  # small model outputs are enlarged
                            scale = cell / max(im.size)
                            im = im.resize((round(im.width * scale), round(im.height * scale)),
                                           Image.Resampling.LANCZOS)
                        canvas.paste(im, (x + (cell - im.width) // 2, y + (cell - im.height) // 2))
                except OSError:
                    draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(200, 200, 200))
        return canvas

    def export(self, folder: str | Path) -> list[Path]:
        """The grid PNG and every edited picture (``<picture>-edited.png``) into ``folder``."""
        from s2s_desktop.settings import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        image = self.grid_image()
        grid = folder / GRID_NAME
        atomic_write(grid, lambda fh: image.save(fh, format="PNG"))
        written.append(grid)
        used: set[str] = set()
        for item in self.done():
            stem = Path(item.picture).stem
            name, n = f"{stem}-edited.png", 2
            while name in used:
                name, n = f"{stem}-{n}-edited.png", n + 1
            used.add(name)
            shutil.copyfile(item.edited, folder / name)
            written.append(folder / name)
        return written
