"""The Edit page's left column: what to edit (a photo, a generated PNG, or a prompt + seed), the
prompts, how to edit (steps, guidance, schedules, mode, local blend) and which subject to put in.

``params()`` is the edit job's parameters (engine.protocol.editing.EDIT_PARAMS) without out_dir and
the words' reweights/blends (the token strip holds those); ``apply_params()`` restores them.
"""

from __future__ import annotations

import html
import random
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.protocol.editing import (
    EDIT_MODES,
    EDIT_PARAMS,
    INSERTION_DEFAULTS,
    INVERSION_TITLES,
    insertion_blend_words,
    insertion_target,
    normalise_word,
    prompt_words,
)
from s2s_desktop.image_meta import generated_size, generated_source, parse_parameters, read_parameters
from s2s_desktop.widgets.edit_controls import ScheduleSlider, ValueSlider

REGENERATE = "regenerate"  # a generated PNG whose prompt and seed are known: no inversion needed
MODE_TIPS = {
    "auto": "Replace when the prompts differ by swapped words of equal token length, refine otherwise",
    "replace": "Swap words: the new word's attention takes the old word's place (same token count)",
    "refine": "Add or change words: the source's attention is kept for the words both prompts share",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
IMAGE_FILTER = f"Images ({' '.join('*' + s for s in IMAGE_SUFFIXES)})"


def _spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box


class EditForm(QWidget):
    image_chosen = Signal(str)  # the user picked a picture to edit (the page opens it)
    source_changed = Signal()
    prompts_changed = Signal()
    settings_changed = Signal()  # a schedule, LoRA scale or threshold moved (a live re-render)
    subject_put_in = Signal(list)  # "Put … in" rewrote the target: the local-blend words to tick

    def __init__(self, parent=None):
        super().__init__(parent)
        self.source_image = ""  # the picture being edited ("" = generated from prompt + seed)
        self._why_not_regenerated = ""
        self.native_resolution: int | None = None
        self.regenerate_size: tuple[int, int] | None = None  # a generated PNG's own size
        self.subject_runs: list[dict] = []
        self.picked_word = ""  # the word last clicked in the token strip (the subject goes there)
        self.insertion: dict | None = None  # the last "Put … in": into, token, class_noun

        # ---- source
        self.source_thumb = QLabel()
        self.source_thumb.setFixedSize(72, 72)
        self.source_thumb.setAlignment(Qt.AlignCenter)
        self.source_thumb.setStyleSheet("border: 1px solid palette(mid); background: palette(base);")
        self.source_text = QLabel()
        self.source_text.setWordWrap(True)
        self.open_button = QPushButton("Open image…")
        self.open_button.setToolTip("A photo (it is inverted first) or a PNG from the Generate page "
                                    "(its prompt and seed regenerate it exactly). You can also drop one here.")
        self.open_button.clicked.connect(self.choose_image)
        self.clear_button = QPushButton("Use prompt + seed")
        self.clear_button.setToolTip("No picture: the source is generated from the source prompt and seed")
        self.clear_button.clicked.connect(lambda: self.set_source_image(""))
        self.invert = QComboBox()
        self.invert.currentIndexChanged.connect(self._on_invert)
        source_box = QGroupBox("Source")
        grid = QVBoxLayout(source_box)
        top = QHBoxLayout()
        top.addWidget(self.source_thumb)
        top.addWidget(self.source_text, 1)
        grid.addLayout(top)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.clear_button)
        grid.addLayout(buttons)
        invert_row = QFormLayout()
        invert_row.addRow("Inversion", self.invert)
        grid.addLayout(invert_row)

        # ---- prompts
        self.source_prompt = QLineEdit()
        self.source_prompt.setPlaceholderText("a red star on a blue background")
        self.target_prompt = QLineEdit()
        self.target_prompt.setPlaceholderText("a green star on a blue background")
        self.target_prompt.setToolTip("The source prompt with words swapped or added; empty: the source "
                                      "prompt itself (to reweight words or look at heatmaps)")
        self.negative_prompt = QLineEdit()
        self.negative_prompt.setPlaceholderText("optional")
        self.seed = _spin(0, 2**31 - 1, random.randint(0, 99999))
        self.seed_random = QPushButton("Random")
        self.seed_random.clicked.connect(lambda: self.seed.setValue(random.randint(0, 2**31 - 1)))
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.seed_random)
        for edit in (self.source_prompt, self.target_prompt, self.negative_prompt):
            edit.textChanged.connect(lambda *_: self.prompts_changed.emit())
        self.source_prompt.textChanged.connect(lambda *_: self._refresh_subject_hint())
        self.source_prompt.textChanged.connect(self._forget_generated_source)
        self.seed.valueChanged.connect(self._forget_generated_source)
        self.target_prompt.textChanged.connect(lambda *_: self._refresh_subject_hint())
        prompts_box = QGroupBox("Prompts")
        prompts = QFormLayout(prompts_box)
        prompts.addRow("Source", self.source_prompt)
        prompts.addRow("Target", self.target_prompt)
        prompts.addRow("Negative", self.negative_prompt)
        prompts.addRow("Seed", seed_row)

        # ---- how to edit
        self.steps = _spin(2, 500, EDIT_PARAMS["steps"].default)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 50.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(EDIT_PARAMS["guidance"].default)
        self.mode = QComboBox()
        for mode in EDIT_MODES:
            self.mode.addItem(mode, mode)
            self.mode.setItemData(self.mode.count() - 1, MODE_TIPS[mode], Qt.ToolTipRole)
        self.mode.setToolTip("\n".join(f"{m}: {t}" for m, t in MODE_TIPS.items()))
        self.cross = ScheduleSlider(EDIT_PARAMS["cross_steps"].default)
        self.cross.setToolTip("Steps that keep the source's cross-attention (word → place): more keeps the "
                              "layout, fewer lets the new words reshape it")
        self.self_attention = ScheduleSlider(EDIT_PARAMS["self_steps"].default)
        self.self_attention.setToolTip("Steps that keep the source's self-attention (shapes, textures)")
        self.threshold = ValueSlider(0.0, 1.0, EDIT_PARAMS["blend_threshold"].default, step=0.05)
        self.threshold.setToolTip("Local blend: how strongly a blend word must attend to a place for it to "
                                  "change (tick 'blend' under a word to use it)")
        self.shared = ValueSlider(0.0, 1.0, EDIT_PARAMS["shared_steps"].default, step=0.05)
        self.shared.setToolTip("Keep layout: the edited picture follows the original for this share of the first "
                               "steps, then the target prompt (and a subject's run) draws the rest")
        for control in (self.cross, self.self_attention):
            control.changed.connect(self.settings_changed)
        self.threshold.value_changed.connect(lambda _: self.settings_changed.emit())
        self.shared.value_changed.connect(lambda _: self.settings_changed.emit())
        edit_box = QGroupBox("Edit")
        form = QFormLayout(edit_box)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Mode", self.mode)
        form.addRow("Cross-attention", self.cross)
        form.addRow("Self-attention", self.self_attention)
        form.addRow("Blend threshold", self.threshold)
        form.addRow("Keep layout", self.shared)

        # ---- subject
        self.subject = QComboBox()
        self.subject.setToolTip("A finished training run of one of your subjects, applied while editing")
        self.subject.currentIndexChanged.connect(self._on_subject)
        self.lora_scale = ValueSlider(-2.0, 4.0, 1.0, step=0.05)
        self.lora_scale.setToolTip("LoRA scale: how strongly the run is applied (1 = as trained, 0 = not at "
                                   "all; double-click resets)")
        self.lora_scale.value_changed.connect(lambda _: self.settings_changed.emit() if self.adapter() else None)
        self.subject_hint = QLabel()
        self.subject_hint.setWordWrap(True)
        self.put_in_button = QPushButton("Put it in")
        self.put_in_button.setToolTip("Rewrite the target prompt with the subject's word in place of the chosen "
                                      "word, and set the schedules, blend and strength that insertions need")
        self.put_in_button.clicked.connect(lambda: self.put_subject_in())
        subject_box = QGroupBox("Subject")
        subject_form = QFormLayout(subject_box)
        subject_form.addRow("Run", self.subject)
        subject_form.addRow("Strength", self.lora_scale)
        subject_form.addRow(self.subject_hint)
        subject_form.addRow(self.put_in_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        for box in (source_box, prompts_box, edit_box, subject_box):
            layout.addWidget(box)
        layout.addStretch(1)
        self.set_source_image("")
        self.set_subject_runs([])

    # ------------------------------------------------------------------ source
    def choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a picture to edit", "", IMAGE_FILTER)
        if path:
            self.image_chosen.emit(path)

    def set_source_image(self, path: str) -> None:
        """A photo (inverted), a generated PNG (regenerated from its prompt and seed when it can
        be), or "" (the source is generated from the prompt and seed)."""
        self.source_image = str(path or "")
        self.invert.blockSignals(True)
        self.invert.clear()
        why_not = ""
        if self.source_image:
            parsed = parse_parameters(read_parameters(self.source_image)) if path else {}
            exact, why_not = generated_source(parsed, self.native_resolution)
            if parsed.get("prompt"):  # the prompt helps inversion too
                self.source_prompt.setText(parsed["prompt"].strip())
                self.negative_prompt.setText(parsed.get("negative_prompt", "").strip())
                if parsed.get("Seed", "").isdigit():
                    self.seed.setValue(int(parsed["Seed"]) % 2**31)
            self.regenerate_size = generated_size(parsed) if exact else None
            if exact:
                self.invert.addItem("Not needed: regenerate from prompt + seed", REGENERATE)
                if parsed.get("Steps", "").isdigit():
                    self.steps.setValue(int(parsed["Steps"]))
                try:
                    self.guidance.setValue(float(parsed.get("CFG scale", self.guidance.value())))
                except ValueError:
                    pass
            for key, title in INVERSION_TITLES.items():
                self.invert.addItem(title, key)
            pixmap = QPixmap(self.source_image)
            self.source_thumb.setPixmap(pixmap.scaled(72, 72, Qt.KeepAspectRatio, Qt.SmoothTransformation)
                                        if not pixmap.isNull() else QPixmap())
        else:
            self.source_thumb.setPixmap(QPixmap())
            self.source_thumb.setText("prompt\n+ seed")
        self.invert.blockSignals(False)
        self.invert.setEnabled(bool(self.source_image))
        self.clear_button.setEnabled(bool(self.source_image))
        self._why_not_regenerated = why_not
        self._describe_source()
        self.source_changed.emit()

    def show_generated_source(self, path: str) -> None:
        """After an edit of a prompt + seed source, its thumbnail shows the picture it made."""
        if not self.source_image:
            pixmap = QPixmap(path)
            if not pixmap.isNull():
                self.source_thumb.setPixmap(pixmap.scaled(72, 72, Qt.KeepAspectRatio, Qt.SmoothTransformation))

    def _forget_generated_source(self, *_args) -> None:
        """Another prompt or seed makes another picture: the thumbnail of the last one goes."""
        if not self.source_image and self.source_thumb.pixmap() is not None and not self.source_thumb.pixmap().isNull():
            self.source_thumb.setPixmap(QPixmap())
            self.source_thumb.setText("prompt\n+ seed")

    def _on_invert(self, _index: int) -> None:
        self._describe_source()
        self.source_changed.emit()

    def _describe_source(self) -> None:
        why_not = self._why_not_regenerated
        if not self.source_image:
            text = "Generated from the source prompt and seed below."
        elif self.invert.currentData() == REGENERATE:
            text = (f"<b>{html.escape(Path(self.source_image).name)}</b><br>made here: its prompt and seed "
                    "regenerate it, no inversion needed.")
        else:
            text = f"<b>{html.escape(Path(self.source_image).name)}</b><br>inverted first (into the model's noise)."
            if why_not and "no prompt" not in why_not:
                text += f"<br><i>Not regenerated: {html.escape(why_not)}.</i>"
        self.source_text.setText(text)

    # ------------------------------------------------------------------ subject
    def set_subject_runs(self, runs: list[dict]) -> None:
        """Finished runs with exports: {"label", "folder", "subject_id", "subject", "token", "class_noun"}."""
        keep = self.subject.currentData()
        self.subject_runs = runs
        self.subject.blockSignals(True)
        self.subject.clear()
        self.subject.addItem("None (the base model)", None)
        for run in runs:
            self.subject.addItem(run["label"], run["folder"])
        self.subject.setCurrentIndex(max(self.subject.findData(keep), 0))
        self.subject.blockSignals(False)
        self._on_subject()

    def subject_run(self) -> dict | None:
        folder = self.subject.currentData()
        return next((run for run in self.subject_runs if run["folder"] == folder), None)

    def adapter(self) -> dict | None:
        run = self.subject_run()
        return {"folder": run["folder"], "scale": self.lora_scale.value()} if run else None

    def _on_subject(self, *_args) -> None:
        self.lora_scale.setEnabled(self.subject_run() is not None)
        self._refresh_subject_hint()
        self.settings_changed.emit()

    def select_subject_run(self, folder: str) -> bool:
        """Pick the run whose exports folder this is (from the Library, Train or Compare page)."""
        index = self.subject.findData(str(folder))
        if index < 0:
            return False
        self.subject.setCurrentIndex(index)
        return True

    def set_picked_word(self, word: str) -> None:
        """The word the user last clicked in the token strip: the subject goes in its place."""
        self.picked_word = normalise_word(word)
        self._refresh_subject_hint()

    def insertion_prompt(self) -> str:
        """The prompt the subject is put into: the target, or the source when the target is empty."""
        return self.target_prompt.text().strip() or self.source_prompt.text().strip()

    def insertion_plan(self) -> tuple[str, str, str]:
        """(the word replaced, the new target prompt, '') or ('', '', why not)."""
        run = self.subject_run()
        if run is None:
            return "", "", "no run is chosen"
        prompt = self.insertion_prompt()
        if run["token"] in prompt_words(prompt):
            return "", "", "in"
        words = {normalise_word(w) for w in prompt_words(prompt)}
        for into in (self.picked_word, run["class_noun"]):
            if into and into in words:
                try:
                    return into, insertion_target(prompt, into, run["token"], run["class_noun"]), ""
                except ValueError:
                    continue
        return "", "", "no word"

    def _refresh_subject_hint(self) -> None:
        run = self.subject_run()
        if run is None:
            self.subject_hint.setText("Pick a run to put one of your subjects into the picture.")
            self.put_in_button.hide()
            return
        name, token, noun = html.escape(run["subject"]), html.escape(run["token"]), html.escape(run["class_noun"])
        into, target, why_not = self.insertion_plan()
        self.put_in_button.show()
        self.put_in_button.setEnabled(not why_not)
        if why_not == "in":
            self.put_in_button.setText(f"Put {run['subject']} in")
            if run["token"] in prompt_words(self.source_prompt.text()):
                text = (f"{name} is in the source prompt: the run draws both pictures, and the edit "
                        f"changes {name}'s picture.")
            else:
                text = (f"{name} is in the target prompt: the run is applied to the edited picture only; "
                        "the original stays as it is.")
            self.subject_hint.setText(text)
            return
        if why_not:
            self.put_in_button.setText(f"Put {run['subject']} in")
            picked = (f"“{html.escape(self.picked_word)}” (the word you clicked) is not in the prompt, and it "
                      if self.picked_word else "The prompt ")
            self.subject_hint.setText(f"{picked}has no “{noun}” to replace: click a word in the token strip "
                                      f"to put {name} in its place, or write “{token} {noun}” in the target prompt.")
            return
        self.put_in_button.setText(f"Put {run['subject']} in place of “{into}”")
        d = INSERTION_DEFAULTS
        self.put_in_button.setToolTip(
            f"The target prompt becomes “{target}”; layout kept for {d['shared_steps']:.0%} of the steps, "
            f"cross-attention {d['cross_steps']:.0%}, "
            f"self-attention {d['self_steps']:.0%}, local blend on “{run['class_noun']}” and “{run['token']}” "
            f"(threshold {d['blend_threshold']:g}), strength {d['lora_scale']:g}")
        self.subject_hint.setText(
            f"The target becomes “{html.escape(target)}”. {name} is drawn into the edited picture only; the "
            f"original stays as it is, and local blend keeps the change to the {noun}."
            + ("" if self.picked_word == into else f" Click a word in the token strip to put {name} in its place.")
        )

    def put_subject_in(self) -> bool:
        """Put the run's subject in place of the clicked word (else the class noun): the target prompt
        gets "<token> <noun>" there, the schedules, threshold and strength the insertion defaults, and
        ``subject_put_in`` hands the page the local-blend words (the token strip holds those)."""
        run = self.subject_run()
        into, target, why_not = self.insertion_plan()
        if run is None or why_not:
            return False
        d = INSERTION_DEFAULTS
        self.cross.set_value(d["cross_steps"], quiet=True)
        self.shared.set_value(d["shared_steps"], quiet=True)
        self.self_attention.set_value(d["self_steps"], quiet=True)
        self.threshold.set_value(d["blend_threshold"], quiet=True)
        self.lora_scale.set_value(d["lora_scale"], quiet=True)
        self.insertion = {"into": into, "token": run["token"], "class_noun": run["class_noun"], "target": target}
        self.target_prompt.setText(target)  # → prompts_changed: the token strip shows the new words
        self.subject_put_in.emit(insertion_blend_words(run["token"], run["class_noun"]))
        return True

    def batch_insertion(self) -> dict | None:
        """The insertion the form is set up for (a batch repeats it on every generated picture's own
        prompt): {into, token, class_noun}, or None when the target prompt is no longer the one
        "Put … in" wrote, or another run is chosen."""
        run, chosen = self.subject_run(), self.insertion
        if run is None or not chosen or chosen["token"] != run["token"]:
            return None
        if self.target_prompt.text().strip() != chosen["target"]:
            return None
        return {k: chosen[k] for k in ("into", "token", "class_noun")}

    # ------------------------------------------------------------------ parameters
    def params(self) -> dict:
        method = self.invert.currentData() if self.source_image else REGENERATE
        params = {
            "source_prompt": self.source_prompt.text().strip(),
            "target_prompt": self.target_prompt.text().strip(),
            "negative_prompt": self.negative_prompt.text().strip(),
            "image": "" if method == REGENERATE else self.source_image,
            "seed": self.seed.value(),
            "steps": self.steps.value(),
            "guidance": self.guidance.value(),
            "mode": self.mode.currentData(),
            "cross_steps": self.cross.value(),
            "shared_steps": self.shared.value(),
            "self_steps": self.self_attention.value(),
            "blend_threshold": self.threshold.value(),
            "heatmaps": True,
        }
        if method != REGENERATE:
            params["invert"] = method
        elif self.source_image and self.regenerate_size:
            params["width"], params["height"] = self.regenerate_size
        adapter = self.adapter()
        if adapter:
            params["adapter"] = adapter
        return params

    def shown_source(self) -> str:
        """The picture the user chose (also when it is regenerated rather than inverted)."""
        return self.source_image

    def apply_params(self, params: dict, source_image: str = "") -> None:
        """Restore an earlier edit's settings (from the history)."""
        self.set_source_image(source_image or params.get("image", ""))
        if params.get("image") and self.invert.findData(params.get("invert", "direct")) >= 0:
            self.invert.setCurrentIndex(self.invert.findData(params.get("invert", "direct")))
        self.source_prompt.setText(params.get("source_prompt", ""))
        self.target_prompt.setText(params.get("target_prompt", ""))
        self.negative_prompt.setText(params.get("negative_prompt", ""))
        self.seed.setValue(int(params.get("seed", 0)) % 2**31)
        self.steps.setValue(int(params.get("steps", self.steps.value())))
        self.guidance.setValue(float(params.get("guidance", self.guidance.value())))
        self.mode.setCurrentIndex(max(self.mode.findData(params.get("mode", "auto")), 0))
        self.cross.set_value(params.get("cross_steps", EDIT_PARAMS["cross_steps"].default), quiet=True)
        self.shared.set_value(params.get("shared_steps", 0.0), quiet=True)
        self.self_attention.set_value(params.get("self_steps", EDIT_PARAMS["self_steps"].default), quiet=True)
        self.threshold.set_value(params.get("blend_threshold", 0.3), quiet=True)
        adapter = params.get("adapter") or {}
        index = self.subject.findData(adapter.get("folder")) if adapter else 0
        self.subject.setCurrentIndex(max(index, 0))
        if adapter:
            self.lora_scale.set_value(adapter.get("scale", 1.0), quiet=True)
