"""User text that becomes a file name (stdlib only: the GUI and the engine apply the same rule).

A name is data until it is joined to a folder; then ``../x``, ``C:x``, a Windows device name
(``NUL.png`` writes nowhere on Windows) or a right-to-left override would put the file somewhere
else than the user sees. :func:`file_name_problem` says why a name cannot be used, or None.
"""

from __future__ import annotations

import re
import unicodedata

# Windows opens these as devices whatever the extension ("nul.safetensors" is the NUL device).
WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{kind}{n}" for kind in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")}
)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def is_windows_device(name: str) -> bool:
    """``nul``, ``Con.txt``, ``lpt1 .png`` … (Windows ignores case, the extension and trailing spaces)."""
    return name.split(".")[0].rstrip(" ").upper() in WINDOWS_DEVICES


def file_name_problem(name: str, whole: bool = True) -> str | None:
    """Why ``name`` cannot name a file inside a folder (None: it can; "" is left to the caller).
    ``whole=False``: the name only starts a file name (a prefix), so a trailing dot does not
    matter, and a device name only when the prefix holds the first dot ("nul.x" + "-s3.png")."""
    if not name:
        return None
    # NFKC too: fullwidth "／" or "．．" become "/" and ".." under some conversions (Windows best-fit).
    for form in (name, unicodedata.normalize("NFKC", name)):
        if _UNSAFE.search(form):
            return 'must not contain / \\ : * ? " < > | or control characters (it names a file)'
        if form.strip(". ") == "":
            return "must contain letters or digits (it names a file)"
        if (whole or "." in form) and is_windows_device(form):
            return f"{name!r} is a device name on Windows; choose another name"
    if any(unicodedata.category(ch) in ("Cf", "Cs", "Co", "Zl", "Zp") for ch in name):
        return "must not contain invisible or direction-changing characters (it names a file)"
    if whole and name[-1] in ". ":
        return "must not end with a dot or a space (Windows drops them)"
    return None


def file_prefix_problem(prefix: str) -> str | None:
    return file_name_problem(prefix, whole=False)


# A Hugging Face repo id, as the hub accepts it (owner up to 96 characters, name up to 96).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")


def is_hub_id(text: str) -> bool:
    """``owner/name``; never a path (``./a/b``, ``/a/b``, ``~/a``), so a missing file is not a repo."""
    return bool(HUB_ID.match(text)) and not text.startswith((".", "/", "~"))
