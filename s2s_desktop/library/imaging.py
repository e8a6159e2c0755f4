"""Reading users' photos safely: validation with a reason per refusal, normalisation to 8-bit RGB,
pixel hashes for duplicates, perceptual hashes for near-duplicates, crops and thumbnails.

Pure Pillow + numpy (no Qt, no torch). The stored original is never rewritten; every consumer
(thumbnails, training export) goes through :func:`load_normalized`, so EXIF rotation and colour
conversion are applied the same way everywhere.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from s2s_desktop.settings import atomic_write

# Transparent pixels are flattened onto this grey: neither white nor black biases the subject's outline.
NEUTRAL_BACKGROUND = (128, 128, 128)
DEFAULT_MIN_SHORT_SIDE = 256
DEFAULT_MAX_MEGAPIXELS = 64.0  # a 100-megapixel phone shot is real; 64 MP covers ordinary cameras
NEAR_DUPLICATE_BITS = 6  # dHash Hamming distance (of 64) at or under which two photos look the same


class ImageRefused(Exception):
    """A file that cannot become a training photo; ``reason`` is shown to the user as is."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass
class NormalizedImage:
    image: Image.Image  # 8-bit RGB, EXIF orientation applied
    format: str  # what the file really is (PNG, JPEG …), not what its extension claims
    conversions: list[str] = field(default_factory=list)  # what was done, for the per-file report

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def open_checked(
    path: Path, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, min_short_side: int = 0
) -> NormalizedImage:
    """Open, validate and normalise one file, or raise :class:`ImageRefused` saying why."""
    path = Path(path)
    try:
        size_bytes = path.stat().st_size
    except FileNotFoundError:
        raise ImageRefused("the file does not exist (moved or deleted?)", "missing") from None
    except OSError as exc:
        raise ImageRefused(f"the file cannot be read ({exc.strerror or exc})", "unreadable") from None
    if path.is_dir():
        raise ImageRefused("this is a folder, not an image", "not_image")
    if size_bytes == 0:
        raise ImageRefused("the file is empty (0 bytes)", "empty")
    limit = int(max_megapixels * 1_000_000)
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit and raises above twice that; we apply ours below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                width, height = probe.size
                fmt = probe.format or "unknown"
                if width * height > limit:
                    raise _bomb(width, height, max_megapixels)
                probe.load()  # decodes every byte: truncated and corrupt files fail here
                normalized = _normalize(probe)
    except ImageRefused:
        raise
    except Image.DecompressionBombError:
        raise ImageRefused(
            f"the image declares more than {max_megapixels:g} megapixels (a decompression bomb or a huge "
            "scan); export a smaller version and add that",
            "too_many_pixels",
        ) from None
    except UnidentifiedImageError:
        raise ImageRefused(
            "not an image this app can read (supported: JPEG, PNG, WebP, TIFF, BMP, GIF …)", "not_image"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRefused(f"the file is truncated or corrupt ({exc}); re-export or re-copy it", "corrupt") from None
    normalized.format = fmt
    short = min(normalized.size)
    if min_short_side and short < min_short_side:
        w, h = normalized.size
        raise ImageRefused(
            f"too small: {w}×{h} px; training needs at least {min_short_side} px on the short side "
            "(use a larger original, or lower the limit in Settings)",
            "too_small",
        )
    return normalized


def _bomb(width: int, height: int, max_megapixels: float) -> ImageRefused:
    return ImageRefused(
        f"{width}×{height} px is {width * height / 1e6:.0f} megapixels, over the limit of {max_megapixels:g} "
        "(a decompression bomb or a huge scan); export a smaller version and add that",
        "too_many_pixels",
    )


def _normalize(image: Image.Image) -> NormalizedImage:
    conversions: list[str] = []
    orientation = image.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
        conversions.append("rotated as its EXIF orientation says")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow's convert("L") clips 16-bit values at 255 (a white image); scale to 8 bits instead.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        conversions.append("16-bit → 8-bit")
        mode = "L"
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1e-12)
        image = Image.fromarray(((array - array.min()) / span * 255.0).astype(np.uint8), "L")
        conversions.append("floating point → 8-bit")
        mode = "L"
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            background = Image.new("RGBA", rgba.size, NEUTRAL_BACKGROUND + (255,))
            image = Image.alpha_composite(background, rgba).convert("RGB")
            conversions.append("transparency flattened onto grey")
        else:
            image = rgba.convert("RGB")
    elif mode != "RGB":
        names = {"CMYK": "CMYK", "P": "palette", "L": "greyscale", "1": "black-and-white", "YCbCr": "YCbCr"}
        if mode in ("CMYK", "P", "1", "LAB", "HSV"):
            conversions.append(f"{names.get(mode, mode)} → RGB")
        image = image.convert("RGB")
    return NormalizedImage(image=image, format="", conversions=conversions)


def load_normalized(path: Path) -> Image.Image:
    """The 8-bit RGB, upright version of a stored original (no size limits: it was checked on import)."""
    return open_checked(Path(path), max_megapixels=1e6).image


def pixel_hash(image: Image.Image) -> str:
    """Identical pixels give identical hashes, whatever the file format or metadata."""
    digest = hashlib.sha256(f"{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def difference_hash(image: Image.Image) -> int:
    """64-bit dHash: robust to re-encoding and resizing, so near-duplicates land a few bits apart."""
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def signed64(value: int) -> int:
    """SQLite integers are signed 64-bit; store dHashes there without overflow."""
    return value - (1 << 64) if value >= 1 << 63 else value


def unsigned64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


# ---------------------------------------------------------------------------------------- crops
@dataclass(frozen=True)
class Crop:
    """A square in the upright image's pixels; stored as data, the original stays untouched."""

    x: int
    y: int
    size: int

    @staticmethod
    def centre(width: int, height: int) -> Crop:
        side = min(width, height)
        return Crop((width - side) // 2, (height - side) // 2, side)

    def clamped(self, width: int, height: int, min_size: int = 16) -> Crop:
        size = max(min(int(self.size), width, height), min(min_size, width, height))
        x = min(max(int(self.x), 0), width - size)
        y = min(max(int(self.y), 0), height - size)
        return Crop(x, y, size)

    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.size, self.y + self.size)


def cropped(image: Image.Image, crop: Crop, size: int) -> Image.Image:
    """The crop resized to ``size``² (what training sees)."""
    return image.crop(crop.box()).resize((size, size), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------------------------------- files
def copy_atomic(source: Path, target: Path) -> None:
    """Copy to a temp file beside ``target``, fsync, rename: a crash leaves no half file under its name."""

    def copy(out) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)

    atomic_write(target, copy)


def save_png_atomic(image: Image.Image, target: Path) -> None:
    atomic_write(target, lambda out: image.save(out, format="PNG"))


def expand_paths(paths) -> list[Path]:
    """Files as given; a folder as its files (sorted, one level deep, hidden files such as .DS_Store
    skipped). Non-images in a folder stay in the list so the report says why each was not added."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith("."))
        else:
            out.append(path)
    return out
