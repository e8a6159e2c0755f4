"""Choosing how to train: four method cards, and the "Advanced" editor of every training field.

The editor is generated from ``engine.protocol.training.TRAIN_CONFIG`` so a field added there shows
up here without GUI changes. Numbers are typed into text boxes (not spin boxes) so that what the
user types is checked by the same ``validate_config`` the engine uses, with the reason shown beside
the field instead of a value silently clamped.
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from engine.protocol import ProtocolError
from engine.protocol.training import (
    METHOD_BLURBS,
    METHOD_TITLES,
    METHODS,
    TRAIN_CONFIG,
    UNUSED,
    validate_config,
)

ERROR_STYLE = "color: #a93226;"
CARD_STYLE = (
    "QFrame#methodCard { border: 1px solid palette(mid); border-radius: 6px; }"
    "QFrame#methodCard[selected=\"true\"] { border: 2px solid palette(highlight); background: palette(alternate-base); }"
)

# (label, tooltip) per field; a field missing here still gets an editor, named after itself.
FIELD_TEXT = {
    "steps": ("Steps", "How many optimisation steps to train"),
    "learning_rate": ("Learning rate", "Of the UNet (DreamBooth) or the LoRA layers"),
    "embedding_learning_rate": ("Word learning rate", "Of the new word's embedding (Textual Inversion, pivotal)"),
    "lr_warmup_steps": ("Warm-up steps", "The learning rate rises from 0 over these steps"),
    "lr_schedule": ("Rate schedule", "After the warm-up: hold the rate (constant), or lower it to 0 by the last step"),
    "batch": ("Batch size", "Photos per step (class images come on top, as many again)"),
    "rank": ("LoRA rank", "Size of the low-rank layers: higher learns more detail, files get larger"),
    "alpha": ("LoRA alpha", "Scale of the LoRA layers; empty means the same as the rank"),
    "lora_layers": ("LoRA layers", "Where the LoRA layers go: attention (the usual), convolutions (ResNet and "
                    "feed-forward layers, attention untouched) or all"),
    "resolution": ("Resolution (px)", "Training size; empty means the model's native size"),
    "instance_prompt": ("Instance prompt", "The caption of your photos; {token} and {class} are filled in"),
    "prior": ("Prior preservation", "Also train on class images so the model keeps drawing other members of the class"),
    "prior_weight": ("Prior weight", "How much the class images count against your photos"),
    "prior_on_latents": ("Prior on the model's own latents",
                         "Train the prior on the latents the base model drew (on) or on its class pictures "
                         "encoded again (off, as diffusers' scripts do)"),
    "class_prompt": ("Class prompt", "The caption of the class images"),
    "class_images": ("Class images", "How many to generate (once; they are cached for later runs)"),
    "class_image_steps": ("Class image steps", "Sampling steps per class image"),
    "flip": ("Random flips", "Mirror photos at random (off: text and logos would be learnt mirrored too)"),
    "min_snr_gamma": ("Min-SNR γ", "Loss weighting that speeds up training; 0 turns it off (5 is common)"),
    "offset_noise": ("Offset noise", "Helps very dark or very bright images; 0 turns it off"),
    "init_word": ("Start from word", "The new word starts as this word's embedding; empty means the class noun, "
                  "{token} the identifier as the model read it before"),
    "word_vectors": ("Word vectors", "Embedding vectors of the new word (more hold more detail); 0 means one per "
                     "piece of the start word"),
    "word_train_fraction": ("Word trains (share of steps)", "Pivotal tuning: the fraction of the steps the new word learns "
                            "with the LoRA; after it only the LoRA learns (1 = throughout)"),
    "seed": ("Seed", "Same seed and settings: the same run"),
    "checkpoint_every": ("Checkpoint every", "Steps between checkpoints (what pause and resume go back to)"),
    "keep_checkpoints": ("Keep checkpoints", "How many of the newest checkpoints stay, to compare steps in a gallery "
                         "(a full fine-tune's are GBs each)"),
    "sample_every": ("Sample every", "Steps between sample rows; 0 samples only before and after training"),
    "sample_prompts": ("Sample prompts", "One prompt a line; {token} and {class} are filled in"),
    "sample_seeds": ("Sample seeds", "Comma-separated; each prompt is drawn once per seed"),
    "sample_steps": ("Sample steps", "Sampling steps per sample image"),
    "mixed_precision": ("Mixed precision", "auto: bf16 or fp16 on a GPU that supports it, float32 otherwise"),
    "gradient_checkpointing": ("Gradient checkpointing", "Less memory, about 20% slower"),
    "adam_8bit": ("8-bit Adam", "Less optimizer memory (CUDA GPUs with bitsandbytes only)"),
    "max_grad_norm": ("Max gradient norm", "Clip gradients to this norm; 0 turns it off"),
}
GROUPS = (
    ("Training", ("steps", "learning_rate", "embedding_learning_rate", "lr_warmup_steps", "lr_schedule", "batch", "rank",
                  "alpha", "lora_layers", "resolution", "instance_prompt", "init_word", "word_vectors", "word_train_fraction", "seed")),
    ("Prior preservation", ("prior", "prior_weight", "class_prompt", "class_images", "class_image_steps",
                            "prior_on_latents")),
    ("Samples and checkpoints", ("sample_every", "sample_prompts", "sample_seeds", "sample_steps",
                                 "checkpoint_every", "keep_checkpoints")),
    ("Memory and quality", ("mixed_precision", "gradient_checkpointing", "adam_8bit", "flip", "min_snr_gamma",
                            "offset_noise", "max_grad_norm")),
)
FIELD_IN_MESSAGE = re.compile(r"config\.(\w+)")


class MethodCard(QFrame):
    def __init__(self, method: str, group: QButtonGroup, parent=None):
        super().__init__(parent)
        self.method = method
        self.setObjectName("methodCard")
        self.radio = QRadioButton(METHOD_TITLES[method])
        self.radio.setStyleSheet("font-weight: bold;")
        group.addButton(self.radio)
        blurb = QLabel(METHOD_BLURBS[method])
        blurb.setWordWrap(True)
        blurb.setContentsMargins(22, 0, 0, 0)  # under the title, not under the radio dot
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(2)
        layout.addWidget(self.radio)
        layout.addWidget(blurb)
        self.radio.toggled.connect(self._show_selected)

    def mousePressEvent(self, event) -> None:  # the whole card is the target, not just the dot
        self.radio.setChecked(True)
        super().mousePressEvent(event)

    def _show_selected(self, on: bool) -> None:
        self.setProperty("selected", on)
        self.style().unpolish(self)
        self.style().polish(self)


class MethodCards(QWidget):
    method_changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setStyleSheet(CARD_STYLE)
        self.group = QButtonGroup(self)
        self.cards = {method: MethodCard(method, self.group) for method in METHODS}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        for card in self.cards.values():
            layout.addWidget(card)
            card.radio.toggled.connect(lambda on, m=card.method: on and self.method_changed.emit(m))

    def method(self) -> str:
        return next((m for m, card in self.cards.items() if card.radio.isChecked()), "lora")

    def set_method(self, method: str) -> None:
        self.cards[method].radio.setChecked(True)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


class ConfigEditor(QWidget):
    """An editor per TRAIN_CONFIG field. ``edited`` fires when the user changes one (not when the
    page fills them in), so the page knows which values are the user's own."""

    edited = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.editors: dict[str, QWidget] = {}
        self.error_labels: dict[str, QLabel] = {}
        self.rows: dict[str, tuple[QLabel, QWidget]] = {}
        self.touched: set[str] = set()
        self._filling = False
        self.reset_button = QPushButton("Reset to the preset")
        self.reset_button.setToolTip("Forget your changes to these settings")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        grouped = [name for _, names in GROUPS for name in names]
        groups = list(GROUPS) + [("Other", tuple(n for n in TRAIN_CONFIG if n not in grouped))]
        self.group_titles: list[tuple[QLabel, tuple[str, ...]]] = []
        for title, names in groups:
            names = tuple(n for n in names if n in TRAIN_CONFIG)
            if not names:
                continue
            heading = QLabel(f"<b>{title}</b>")
            layout.addWidget(heading)
            self.group_titles.append((heading, names))
            form = QFormLayout()
            form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
            for name in names:
                self._add_row(form, name)
            layout.addLayout(form)
        layout.addWidget(self.reset_button, 0, Qt.AlignLeft)

    def _add_row(self, form: QFormLayout, name: str) -> None:
        spec = TRAIN_CONFIG[name]
        text, tip = FIELD_TEXT.get(name, (name.replace("_", " ").capitalize(), ""))
        if spec.kind is bool:
            editor = QCheckBox()
            editor.toggled.connect(lambda *_: self._changed(name))
        elif spec.choices:
            editor = QComboBox()
            for choice in spec.choices:
                editor.addItem(str(choice), choice)
            editor.currentIndexChanged.connect(lambda *_: self._changed(name))
        elif spec.kind is list and spec.item is str:
            editor = QPlainTextEdit()
            editor.setFixedHeight(62)
            editor.textChanged.connect(lambda: self._changed(name))
        else:
            editor = QLineEdit()
            if spec.default is None:
                editor.setPlaceholderText("automatic")
            editor.textEdited.connect(lambda *_: self._changed(name))
        editor.setToolTip(tip)
        error = QLabel()
        error.setStyleSheet(ERROR_STYLE)
        error.setWordWrap(True)
        error.hide()
        cell = QWidget()
        column = QVBoxLayout(cell)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(1)
        column.addWidget(editor)
        column.addWidget(error)
        label = QLabel(text)
        label.setToolTip(tip)
        form.addRow(label, cell)
        self.editors[name], self.error_labels[name], self.rows[name] = editor, error, (label, cell)

    def _changed(self, name: str) -> None:
        if not self._filling:
            self.touched.add(name)
            self.edited.emit(name)

    # ------------------------------------------------------------------ values
    def set_method(self, method: str) -> None:
        hidden = UNUSED.get(method, set())
        for name, (label, cell) in self.rows.items():
            label.setVisible(name not in hidden)
            cell.setVisible(name not in hidden)
        for heading, names in self.group_titles:
            heading.setVisible(any(n not in hidden for n in names))

    def visible_fields(self) -> list[str]:
        return [name for name, (label, _) in self.rows.items() if not label.isHidden()]

    def set_values(self, config: dict, keep_touched: bool = True) -> None:
        """Show ``config``; fields the user changed keep what they typed (unless told otherwise)."""
        self._filling = True
        try:
            for name, editor in self.editors.items():
                if name not in config or (keep_touched and name in self.touched):
                    continue
                value = config[name]
                if isinstance(editor, QCheckBox):
                    editor.setChecked(bool(value))
                elif isinstance(editor, QComboBox):
                    editor.setCurrentIndex(max(0, editor.findData(value)))
                elif isinstance(editor, QPlainTextEdit):
                    editor.setPlainText("\n".join(value or []))
                else:
                    editor.setText(_format(value))
        finally:
            self._filling = False

    def forget_changes(self) -> None:
        self.touched.clear()

    def values(self) -> tuple[dict, dict[str, str]]:
        """What the editors hold, typed, and the fields whose text is not a value at all."""
        values, errors = {}, {}
        for name, editor in self.editors.items():
            spec = TRAIN_CONFIG[name]
            try:
                values[name] = self._read(editor, spec)
            except ValueError as exc:
                errors[name] = str(exc)
        return values, errors

    @staticmethod
    def _read(editor: QWidget, spec):
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QComboBox):
            return editor.currentData()
        if isinstance(editor, QPlainTextEdit):
            return [line.strip() for line in editor.toPlainText().splitlines() if line.strip()]
        text = editor.text().strip()
        if spec.kind is str:
            return editor.text()
        if not text:
            if spec.default is None:
                return None
            raise ValueError("needs a value")
        if spec.kind is list:
            try:
                return [int(part) for part in re.split(r"[,\s]+", text) if part]
            except ValueError:
                raise ValueError("must be whole numbers, separated by commas") from None
        if spec.kind is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError("must be a whole number") from None
        try:
            return float(text)
        except ValueError:
            raise ValueError("must be a number, e.g. 0.0001 or 1e-4") from None

    def show_errors(self, errors: dict[str, str]) -> None:
        for name, label in self.error_labels.items():
            label.setText(errors.get(name, ""))
            label.setVisible(name in errors)
            editor = self.editors[name]
            editor.setStyleSheet("border: 1px solid #a93226;" if name in errors and isinstance(editor, QLineEdit) else "")


def check_config(base: dict, editor: ConfigEditor, method: str) -> tuple[dict | None, dict[str, str]]:
    """The config to train with (the editor's values for the fields this method uses, the preset
    ``base`` for the rest), validated; or None and the problems by field."""
    values, errors = editor.values()
    hidden = UNUSED.get(method, set())
    errors = {name: text for name, text in errors.items() if name not in hidden}
    if errors:
        return None, errors
    config = {**base, **{name: value for name, value in values.items() if name not in hidden}}
    try:
        return validate_config(config), {}
    except ProtocolError as exc:
        match = FIELD_IN_MESSAGE.search(exc.message)
        name = match.group(1) if match and match.group(1) in TRAIN_CONFIG else ""
        text = FIELD_IN_MESSAGE.sub(lambda m: FIELD_TEXT.get(m.group(1), (m.group(1),))[0], exc.message)
        return None, {name: text[:1].upper() + text[1:]}


def errors_summary(errors: dict[str, str]) -> str:
    """One line for the message under the buttons: which settings need fixing."""
    names = [FIELD_TEXT.get(name, (name,))[0] for name in errors if name]
    general = errors.get("", "")
    if names:
        return f"Fix {', '.join(names)} in the advanced settings." + (f" {general}" if general else "")
    return general


def summary_text(method: str, config: dict) -> str:
    """One line: the numbers that matter for this method."""
    parts = [f"{config['steps']} steps"]
    if method != "ti":
        parts.append(f"lr {config['learning_rate']:g}")
    if method in ("ti", "pivotal"):
        parts.append(f"word lr {config['embedding_learning_rate']:g}")
    parts.append(f"batch {config['batch']}")
    if method in ("lora", "pivotal"):
        parts.append(f"rank {config['rank']}")
    if method != "ti":
        uses_prior = config["prior"] and config["class_images"] > 0
        parts.append(f"prior on, {config['class_images']} class images" if uses_prior else "prior off")
    return " · ".join(parts)


def preflight_text(result: dict) -> str:
    peak = result.get("peak_memory_bytes")
    lines = [
        f"<b>{result['seconds_per_step']:.2f} s</b> per step",
        f"peak memory <b>{peak / 2**30:.2f} GiB</b>" if peak else "peak memory not measurable here",
        f"about <b>{result['eta_seconds'] / 60:.1f} min</b> for {result['steps']} steps",
        f"<b>{result['trainable_parameters']:,}</b> trainable parameters",
    ]
    text = "Preflight on " + f"{result.get('device', '?')}, {result.get('resolution', '?')} px: " + " · ".join(lines)
    if result.get("class_images_to_make"):
        text += f" (includes making {_images(result['class_images_to_make'])})"
    return text


def _images(n: int) -> str:
    return f"{n} class image{'' if n == 1 else 's'}"
