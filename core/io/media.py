"""Checks of media files at import time: is this a readable image, a non-empty audio clip?

Each check returns ``None`` when the file is fine, or a ``(problem, detail)`` pair that the import report
shows for the row. Nothing here raises on a bad file.

Images over a pixel cap (:func:`max_pixels`: 50 megapixels, or ``LABELTOOL_MAX_PIXELS``) are refused from their
header alone, before anything is decoded: a 144-megapixel PNG would otherwise take 1.45 GB to decode. Pillow keeps
its own decompression-bomb limit (about 179 megapixels); a cap set above it is met by Pillow's refusal instead.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from core.errors import check_param

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
TEXT_EXTENSIONS = {".txt"}

Problem = tuple[str, str]

MAX_PIXELS_ENV = "LABELTOOL_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000


def max_pixels() -> int:
    """The largest image (width x height, in pixels) an import accepts: ``LABELTOOL_MAX_PIXELS`` when set (a
    positive whole number; ``_`` separators allowed), else 50 megapixels. A bad value is a ValidationError."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    check_param("import", MAX_PIXELS_ENV, raw, value > 0,
                f"a positive whole number of pixels (e.g. {DEFAULT_MAX_PIXELS}); unset it for the default")
    return value


def kind_of(path: Path) -> str | None:
    """'image', 'audio', 'text' or None, by the file's extension."""
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in TEXT_EXTENSIONS:
        return "text"
    return None


def file_hash(path: Path) -> str:
    """SHA-1 of the file's bytes (what makes two files duplicates)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _too_large(width: int, height: int, cap: int) -> Problem | None:
    if width * height <= cap:
        return None
    return ("too_large", f"the image is {width}x{height} = {width * height / 1e6:.1f} megapixels, over the cap of "
                         f"{cap / 1e6:g} megapixels; shrink it, or raise {MAX_PIXELS_ENV}")


def check_image(path: Path, *, cap: int | None = None) -> Problem | None:
    """Read the image's header and refuse it when it holds more than ``cap`` pixels (default
    :func:`max_pixels`), then decode the whole image: catches huge, corrupt, truncated and non-image files."""
    from PIL import Image, UnidentifiedImageError

    cap = max_pixels() if cap is None else cap
    try:
        with Image.open(path) as im:  # reads the header only
            big = _too_large(im.width, im.height, cap)
            if big is not None:
                return big
            im.load()
            if im.width == 0 or im.height == 0:
                return ("corrupt_image", f"image has size {im.width}x{im.height}")
    except UnidentifiedImageError:
        return ("corrupt_image", "not an image file PIL can identify (corrupt, or another format behind the extension)")
    except Image.DecompressionBombError as exc:
        return ("too_large", f"Pillow refuses to decode it: {exc}")
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        code = "truncated_image" if "truncated" in msg.lower() else "corrupt_image"
        return (code, f"cannot decode the image: {msg}")
    return None


def check_audio(path: Path) -> Problem | None:
    """Decode the first second of an audio file with the engine's own reader (soundfile, librosa fallback):
    catches empty and non-audio files. Problem codes: ``empty_audio``, ``not_audio``."""
    from core.audio.config import AudioError
    from core.audio.load import read_audio

    try:
        y, _ = read_audio(path, max_seconds=1.0)
    except AudioError as exc:
        return ("empty_audio" if exc.reason in ("empty", "missing") else "not_audio", str(exc))
    if y.size == 0:
        return ("empty_audio", "the audio holds no samples")
    return None


def check_text_file(path: Path) -> tuple[Problem | None, str | None]:
    """Read a UTF-8 text file; empty or undecodable files are problems."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as exc:
        return ("bad_text", f"not UTF-8 text: {exc}"), None
    if not text:
        return ("empty_text", "the text file is empty"), None
    return None, text


def check_media(path: Path, kind: str, *, max_image_pixels: int | None = None) -> Problem | None:
    """Dispatch to the check of ``kind`` ('image' or 'audio'); ``max_image_pixels``: see :func:`check_image`."""
    if kind == "image":
        return check_image(path, cap=max_image_pixels)
    if kind == "audio":
        return check_audio(path)
    return None
