"""Artefacts on disk that opening a received project can never turn into running code.

A project folder is meant to be copied and shared, so everything the engine reads back from it must be
data, not code. Python pickles (``joblib``) run code when they are loaded; this module is the one place
that writes and reads the artefacts of runs and projections, in two formats:

**Plain trees** (``<name>.npz``), for everything made of arrays and plain values (DEC / IIC / reid states,
pseudo_label checkpoints): nested ``dict`` / ``list`` / ``tuple`` of ``str``, ``int``, ``float``, ``bool``,
``None``, ``bytes``, NumPy arrays and scalars and torch tensors. The arrays go into an ``.npz`` (loaded
with ``allow_pickle=False``) and the structure into a JSON document stored in the same file (member
``__tree__``). Loading one builds only those types, whoever wrote the file.

**Signed pickles** (``<name>.joblib``), only where a pickle cannot be avoided (a fitted scikit-learn
classifier, a :class:`umap.UMAP` model): the joblib bytes behind a header and an HMAC-SHA256 of them,
keyed by a secret kept **outside every project** (the file named by ``$LABELTOOL_KEY_FILE``, default
``~/.config/labeltool/artefact.key``: 32 random bytes made on first use, mode 0600 in a 0700 folder).
Loading reads the whole file, checks the signature and only then unpickles the bytes it checked, so a
pickle this installation did not write (a project copied from elsewhere, a file replaced inside the
project) raises :class:`UntrustedArtefact` without being unpickled. The callers that can do without the
artefact (a warm start, a cached projection) then start afresh and record why.

File layout of a signed pickle::

    b"LABELTOOL-SIGNED-1\\n" | HMAC-SHA256(key, header + payload) (32 bytes) | payload (joblib bytes)
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import stat
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.errors import StoreError

__all__ = [
    "KEY_ENV", "MAGIC", "TREE_FORMAT", "UntrustedArtefact", "key_file", "artefact_key", "write_signed_pickle",
    "read_signed_pickle", "is_plain", "write_tree", "read_tree", "save_artefact", "load_artefact",
    "artefact_path",
]

log = logging.getLogger(__name__)

#: environment variable naming the key file (default ``~/.config/labeltool/artefact.key``)
KEY_ENV = "LABELTOOL_KEY_FILE"
#: first bytes of a signed pickle
MAGIC = b"LABELTOOL-SIGNED-1\n"
#: ``format`` field of a plain tree's JSON document
TREE_FORMAT = "labeltool-tree-1"
KEY_BYTES = 32
_DIGEST = hashlib.sha256().digest_size
_TREE_MEMBER = "__tree__"
_DEFAULT_REMEDY = "retrain with warm_start=False / recompute the projection"


class UntrustedArtefact(StoreError):
    """A pickle that carries no valid signature of this installation's key: it was not loaded."""


# ------------------------------------------------------------------------------------------------ the key
def key_file() -> Path:
    """The key file: ``$LABELTOOL_KEY_FILE`` when set, else ``~/.config/labeltool/artefact.key``."""
    env = os.environ.get(KEY_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".config" / "labeltool" / "artefact.key"


def artefact_key() -> bytes:
    """The installation's signing key, made on first use (32 random bytes, mode 0600, folder 0700).

    Raises
    ------
    StoreError
        When the key file exists but is shorter than 32 bytes, or cannot be read or created.
    """
    path = key_file()
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = _create_key(path)
    except OSError as exc:
        raise StoreError(f"Cannot read the artefact key {path}: {exc}. Fix its permissions or point "
                         f"${KEY_ENV} at another file.") from exc
    if len(key) < KEY_BYTES:
        raise StoreError(f"The artefact key {path} holds {len(key)} bytes, fewer than {KEY_BYTES}: remove it (a new "
                         f"one is made on next use; artefacts signed with the old key are then refused) or point "
                         f"${KEY_ENV} at another file.")
    _warn_if_shared(path)
    return key


def _create_key(path: Path) -> bytes:
    """Write a new key atomically (a temp file hard-linked into place); another process's key wins a race."""
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, mode=0o700)
            os.chmod(path.parent, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"Cannot create the folder of the artefact key {path}: {exc}. Point ${KEY_ENV} at a "
                             "file in a folder you can write.") from exc
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails when another process made the key first: use theirs
        except FileExistsError:
            return path.read_bytes()
        except OSError:  # a file system without hard links: create it in place, still exclusively
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path.read_bytes()
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
        log.info("created the artefact signing key %s", path)
        return key
    except OSError as exc:
        raise StoreError(f"Cannot create the artefact key {path}: {exc}. Point ${KEY_ENV} at a file in a folder "
                         "you can write.") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _warn_if_shared(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the artefact key %s is readable or writable by other users (mode %o): anyone who can read it "
                    "can sign artefacts this installation will load; chmod 600 it", path, stat.S_IMODE(mode))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, MAGIC + payload, hashlib.sha256).digest()


# ------------------------------------------------------------------------------------------ signed pickles
def _atomic_write_bytes(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_signed_pickle(path: str | os.PathLike, obj: Any) -> Path:
    """Pickle ``obj`` with joblib and write it signed, atomically, to ``path``; returns the path."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    payload = buf.getvalue()
    path = Path(path)
    _atomic_write_bytes(path, MAGIC + _mac(artefact_key(), payload) + payload)
    return path


def read_signed_pickle(path: str | os.PathLike, *, remedy: str = _DEFAULT_REMEDY) -> Any:
    """Unpickle ``path`` after checking its signature against this installation's key.

    Parameters
    ----------
    path : path
        A file written by :func:`write_signed_pickle`.
    remedy : str
        What the user can do instead, appended to the error (e.g. "retrain with warm_start=False").

    Raises
    ------
    UntrustedArtefact
        When the file has no signature or one made with another key; nothing was unpickled.
    FileNotFoundError
        When there is no file.
    """
    import joblib

    path = Path(path)
    blob = path.read_bytes()  # read once: the bytes checked are the bytes unpickled
    head = len(MAGIC) + _DIGEST
    if len(blob) < head or not blob.startswith(MAGIC):
        raise UntrustedArtefact(f"{path} is a pickle without this installation's signature, so it was not loaded: "
                                f"this installation did not write it (a project copied from elsewhere, or a run "
                                f"saved before artefacts were signed?): {remedy}.")
    digest, payload = blob[len(MAGIC):head], blob[head:]
    if not hmac.compare_digest(digest, _mac(artefact_key(), payload)):
        raise UntrustedArtefact(f"{path} is signed with another key than this installation's ({key_file()}), or was "
                                f"changed after it was written, so it was not loaded: this installation did not "
                                f"write it (a project copied from elsewhere?): {remedy}.")
    return joblib.load(io.BytesIO(payload))


# ------------------------------------------------------------------------------------------- plain trees
class _NotPlain(TypeError):
    """The object holds something a plain tree cannot store (it needs a signed pickle)."""


def _encode(obj: Any, arrays: list[np.ndarray]) -> Any:
    """The JSON node of ``obj``; arrays are appended to ``arrays`` and referred to by position."""
    kind = type(obj)
    if obj is None or kind in (bool, int, float, str):
        return obj
    if kind is list:
        return [_encode(v, arrays) for v in obj]
    if kind is tuple:
        return {"$tuple": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, dict) and kind.__module__ in ("builtins", "collections"):
        if all(type(k) is str and not k.startswith("$") for k in obj):
            return {k: _encode(v, arrays) for k, v in obj.items()}
        return {"$dict": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    if kind is bytes:
        return {"$bytes": _add(arrays, np.frombuffer(obj, np.uint8))}
    if kind in (np.ndarray, np.memmap):
        obj = np.asarray(obj)
        if obj.dtype == object:
            return {"$objects": {"shape": list(obj.shape), "items": [_encode(v, arrays) for v in obj.ravel().tolist()]}}
        if obj.dtype.hasobject:
            raise _NotPlain(f"an array of dtype {obj.dtype} with object fields")
        return {"$array": _add(arrays, obj)}
    if isinstance(obj, np.generic):
        if isinstance(obj, np.object_):
            raise _NotPlain("a NumPy object scalar")
        return {"$scalar": _add(arrays, np.asarray(obj))}
    if kind.__module__.startswith("torch") and kind.__name__ in ("Tensor", "Parameter"):
        return {"$tensor": _encode_tensor(obj, arrays)}
    raise _NotPlain(f"an object of type {kind.__module__}.{kind.__qualname__}")


def _add(arrays: list[np.ndarray], arr: np.ndarray) -> int:
    arrays.append(arr)
    return len(arrays) - 1


def _encode_tensor(t: Any, arrays: list[np.ndarray]) -> dict:
    """A strided tensor as its raw bytes (any dtype, bfloat16 included), its dtype name and shape."""
    import torch

    if t.layout != torch.strided or t.is_quantized:
        raise _NotPlain(f"a {t.layout} / quantized tensor")
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().copy()
    return {"array": _add(arrays, raw), "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}


def _decode(node: Any, npz: Any) -> Any:
    """The object of a JSON node; arrays are read from ``npz`` (members ``a<i>``)."""
    if isinstance(node, list):
        return [_decode(v, npz) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (tag, value), = node.items()
        if tag == "$tuple":
            return tuple(_decode(v, npz) for v in value)
        if tag == "$dict":
            return {_hashable(_decode(k, npz)): _decode(v, npz) for k, v in value}
        if tag == "$array":
            return npz[f"a{int(value)}"]
        if tag == "$scalar":
            return npz[f"a{int(value)}"][()]
        if tag == "$bytes":
            return npz[f"a{int(value)}"].tobytes()
        if tag == "$objects":
            shape, items = [int(s) for s in value["shape"]], value["items"]
            if int(np.prod(shape, dtype=np.int64)) != len(items):
                raise ValueError(f"an object array of shape {shape} with {len(items)} items")
            out = np.fromiter((_decode(v, npz) for v in items), dtype=object, count=len(items))
            return out.reshape(shape)  # fromiter: an item that is a tuple stays one element
        if tag == "$tensor":
            return _decode_tensor(value, npz)
    return {k: _decode(v, npz) for k, v in node.items()}


def _hashable(key: Any) -> Any:
    if isinstance(key, list):  # a tuple key always comes back as a tuple; a list is not a valid key
        raise ValueError(f"a dict key that is a list: {key!r}")
    return key


def _decode_tensor(value: dict, npz: Any) -> Any:
    import torch

    dtype = getattr(torch, str(value["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown tensor dtype {value['dtype']!r}")
    shape = [int(s) for s in value["shape"]]
    raw = np.ascontiguousarray(npz[f"a{int(value['array'])}"], dtype=np.uint8)
    if raw.size == 0:  # an empty tensor: nothing to reinterpret
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(raw.copy()).view(dtype).reshape(shape)


def is_plain(obj: Any) -> bool:
    """True when ``obj`` can be stored as a plain tree (:func:`write_tree`), without a pickle."""
    try:
        _encode(obj, [])
    except _NotPlain:
        return False
    return True


def write_tree(path: str | os.PathLike, obj: Any) -> Path:
    """Write the plain tree ``obj`` atomically as an ``.npz`` (arrays) holding its JSON structure; returns the path.

    Raises
    ------
    TypeError
        When ``obj`` holds anything but dicts, lists, tuples, str, int, float, bool, None, bytes, NumPy
        arrays and scalars, and torch tensors (use :func:`write_signed_pickle` for those).
    """
    arrays: list[np.ndarray] = []
    tree = json.dumps({"format": TREE_FORMAT, "root": _encode(obj, arrays)}).encode()
    members = {f"a{i}": a for i, a in enumerate(arrays)}
    members[_TREE_MEMBER] = np.frombuffer(tree, np.uint8)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **members)
    path = Path(path)
    _atomic_write_bytes(path, buf.getvalue())
    return path


def read_tree(path: str | os.PathLike) -> Any:
    """Read a plain tree written by :func:`write_tree` (no pickle, whoever wrote the file).

    Raises
    ------
    StoreError
        When the file is damaged or is not a plain tree (the message names it).
    FileNotFoundError
        When there is no file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files") or _TREE_MEMBER not in npz.files:
                raise ValueError("no structure member: not an artefact written by this tool")
            doc = json.loads(npz[_TREE_MEMBER].tobytes().decode())
            if not isinstance(doc, dict) or doc.get("format") != TREE_FORMAT:
                raise ValueError(f"unknown format {doc.get('format') if isinstance(doc, dict) else doc!r}")
            return _decode(doc["root"], npz)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, TypeError, IndexError, AttributeError, RuntimeError,
            zipfile.BadZipFile) as exc:  # RuntimeError: torch reshapes, and RecursionError of a deep document
        raise StoreError(f"The artefact {path} is damaged or not one this tool writes "
                         f"({type(exc).__name__}: {exc}).") from exc


# ---------------------------------------------------------------------------------------- run artefacts
def save_artefact(folder: str | os.PathLike, name: str, obj: Any) -> Path:
    """Write ``obj`` under ``folder``: ``<name>.npz`` (plain tree) when it is plain, else ``<name>.joblib``
    (signed pickle). Returns the file written."""
    folder = Path(folder)
    try:
        return write_tree(folder / f"{name}.npz", obj)
    except _NotPlain:
        return write_signed_pickle(folder / f"{name}.joblib", obj)


def artefact_path(folder: str | os.PathLike, name: str) -> Path | None:
    """The file of artefact ``name`` in ``folder`` (the plain tree first), or None when there is none."""
    for suffix in (".npz", ".joblib"):
        path = Path(folder) / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def load_artefact(folder: str | os.PathLike, name: str, *, remedy: str = _DEFAULT_REMEDY) -> Any:
    """Read artefact ``name`` of ``folder`` written by :func:`save_artefact`.

    Raises
    ------
    FileNotFoundError
        When neither ``<name>.npz`` nor ``<name>.joblib`` exists.
    UntrustedArtefact
        When it is a pickle this installation did not sign (it is not unpickled).
    StoreError
        When the plain tree is damaged.
    """
    path = artefact_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"No artefact {name!r} (.npz or .joblib) in {folder}.")
    reader: Callable[[Path], Any] = read_tree if path.suffix == ".npz" else \
        (lambda p: read_signed_pickle(p, remedy=remedy))
    return reader(path)
