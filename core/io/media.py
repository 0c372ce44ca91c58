"""Checks of media files at import time: is this a readable image, a non-empty audio clip?

Each check returns ``None`` when the file is fine, or a ``(problem, detail)`` pair that the import report
shows for the row. Nothing here raises on a bad file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
TEXT_EXTENSIONS = {".txt"}

Problem = tuple[str, str]


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


def check_image(path: Path) -> Problem | None:
    """Decode the whole image: catches corrupt, truncated and non-image files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.width == 0 or im.height == 0:
                return ("corrupt_image", f"image has size {im.width}x{im.height}")
    except UnidentifiedImageError:
        return ("corrupt_image", "not an image file PIL can identify (corrupt, or another format behind the extension)")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
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


def check_media(path: Path, kind: str) -> Problem | None:
    """Dispatch to the check of ``kind`` ('image' or 'audio')."""
    if kind == "image":
        return check_image(path)
    if kind == "audio":
        return check_audio(path)
    return None
