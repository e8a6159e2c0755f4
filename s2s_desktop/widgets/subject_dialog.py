"""Dialogs that name things in the library: a new subject, and one-line edits (rename, token).

Every check is the library's own (it raises :class:`LibraryError` with a message for the user), so
the dialogs show that message next to the field and let the user fix it instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from s2s_desktop.library import Library, LibraryError, Subject

ERROR_STYLE = "color: #a93226;"
HELP_STYLE = "color: palette(placeholder-text);"


def sentence(message: str) -> str:
    """Library messages are clauses ("a subject needs a name"); shown alone they start upper-case."""
    return message[:1].upper() + message[1:]


def _help(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet(HELP_STYLE)
    return label


class NewSubjectDialog(QDialog):
    """Name, class noun and identifier token; the token follows the noun until the user edits it."""

    def __init__(self, library: Library, vocabulary: set[str] | None = None, parent=None, name: str = ""):
        super().__init__(parent)
        self.library = library
        self.vocabulary = vocabulary
        self.subject: Subject | None = None
        self._token_typed = False  # once the user types a token, stop replacing it
        self.setWindowTitle("New subject")
        self.setMinimumWidth(440)

        self.name_edit = QLineEdit(name)
        self.name_edit.setPlaceholderText("Biscuit")
        self.noun_edit = QLineEdit()
        self.noun_edit.setPlaceholderText("dog")
        self.token_edit = QLineEdit()
        self.token_edit.setPlaceholderText("<sks-dog>")
        self.noun_edit.textChanged.connect(self._suggest_token)
        self.token_edit.textEdited.connect(self._token_edited)

        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("", _help("How the library lists it; you can rename it later."))
        form.addRow("Class noun", self.noun_edit)
        form.addRow("", _help("What kind of thing it is, in a word or two: dog, mug, person. The model "
                              "already knows the kind; training teaches what makes yours different."))
        form.addRow("Identifier token", self.token_edit)
        form.addRow("", _help("The new word for this subject in prompts, e.g. “a photo of <sks-dog> on a "
                              "beach”. It must be a word the model does not know yet."))
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.button(QDialogButtonBox.Ok).setText("Create")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.name_edit.setFocus()

    def _token_edited(self, text: str) -> None:
        self._token_typed = bool(text.strip())  # clearing the field brings the suggestion back

    def _suggest_token(self, noun: str) -> None:
        if self._token_typed:
            return
        self.token_edit.setText(self.library.suggest_token(noun, self.vocabulary) if noun.strip() else "")

    def show_error(self, message: str) -> None:
        self.error.setText(sentence(message))
        self.error.show()

    def accept(self) -> None:
        try:
            self.subject = self.library.create_subject(
                self.name_edit.text(), self.noun_edit.text(), self.token_edit.text().strip() or None, self.vocabulary
            )
        except LibraryError as exc:
            self.show_error(str(exc))
            return
        super().accept()


def ask_until_valid(parent, title: str, label: str, text: str, apply: Callable[[str], object]):
    """Ask for one line and ``apply`` it; on a LibraryError ask again with the reason above the field.
    Returns what ``apply`` returned, or None when the user cancels."""
    error = ""
    while True:
        prompt = f"{sentence(error)}\n\n{label}" if error else label
        value, ok = QInputDialog.getText(parent, title, prompt, QLineEdit.Normal, text)
        if not ok:
            return None
        try:
            return apply(value)
        except LibraryError as exc:
            error, text = str(exc), value
