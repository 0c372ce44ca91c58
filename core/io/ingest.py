"""Import items into a project from a folder of media files or from a CSV/JSONL manifest.

Bad rows are reported (which row, what, why) and skipped; the rest imports in one transaction; nothing
already stored changes; importing the same source again adds nothing. An import with nothing to write (every
row bad), or one that fails, writes nothing at all: the ``sources`` row is written in the same transaction as
the items.

Manifest columns (CSV with a header, or JSON Lines):

=================  =====================================================================
``path``           media file, relative to the media root (default: the manifest's folder)
``text``           text, or the caption of an image (alias ``caption``)
``label``          a vote for this item by ``annotator`` (default ``--annotator``)
``annotator``      who gave ``label``
``group``          speaker, camera, ... (aliases ``speaker``, ``camera``)
``identity``       person identity (re-identification)
``reference_label`` ground truth for evaluation only, never shown to annotators
``meta.<name>``    any other value, kept in the item's metadata
=================  =====================================================================
A path may repeat on several rows with different annotators: each row is one more vote for that item.

Reading a manifest:

- CSV/TSV files are read as UTF-8; a byte-order mark (Excel's "CSV UTF-8") is dropped, a UTF-16 file with its
  mark is read as such. A file that is not UTF-8 is read as Windows-1252 (Excel's plain "CSV"), or Latin-1 when
  it is not that either, and the report says so in a ``not_utf8`` entry (row 0) naming the first bad byte: the
  rows import, and the user knows to check accented names. JSON Lines are UTF-8 by definition: a line that is
  not is a ``bad_encoding`` row.
- A field may hold up to :data:`MAX_FIELD_CHARS` characters (Python's csv default is 128 KiB, too little for
  long documents); a longer one, or any line csv cannot parse, is a ``bad_csv_row`` row.
- A row with more or fewer fields than the header is a ``ragged_row`` row, skipped (not truncated or padded).

Each row is checked before anything is written: a path with a NUL byte (``bad_path``), a file name or value that
is not valid UTF-8 (``bad_encoding``; the name is shown with ``\\xNN`` escapes), an annotator or label the store
refuses (``bad_annotator``, ``bad_label``: too long, control characters, a reserved annotator name), an image
over the pixel cap (``too_large``, see :func:`core.io.media.max_pixels`), a file that cannot be read
(``unreadable``).

Confinement (``confine_to``, the media roots of :mod:`core.io.media_roots`): imports asked for in the browser
read only below the media roots. The folder or manifest (and a manifest's media root) must lie below one, or
the import is refused up front; a file that leads outside them (a symlink, an absolute or ``../`` manifest path)
is an ``outside_roots`` row. The command line passes None: it imports whatever the shell user can read.

The web app does not import in its script thread: :func:`request_import` queues an ``import`` job, which the
worker runs through :func:`run_import_job`, reporting progress in the job row.
"""
from __future__ import annotations

import codecs
import csv
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from core.io import media
from core.io.media_roots import check_under_roots, resolve_roots
from core.errors import JobCancelled, ValidationError, check_choice, check_param
from core.store.project_store import Store
from core.store.settings import validate_annotator_name, validate_label_name, validate_person_name

MANIFEST_COLUMNS = ("path", "text", "label", "annotator", "group", "identity", "reference_label")
COLUMN_ALIASES = {"caption": "text", "speaker": "group", "camera": "group", "file": "path", "filename": "path"}
LABEL_MODES = (None, "reference", "initial")
DEFAULT_ANNOTATOR = "import"
_MEDIA_KIND = {"image": "image", "image+text": "image", "audio": "audio", "text": "text"}
#: the longest CSV field read (characters): a long document fits; Python's default (131072) does not
MAX_FIELD_CHARS = 16 * 2**20
#: how a manifest that is not UTF-8 is read: the first of these that decodes the whole file
FALLBACK_ENCODINGS = ("cp1252", "latin-1")
_REPORT_PATH_CHARS = 300
_REPORT_DETAIL_CHARS = 1000
_STRING_FIELDS = ("rel", "text", "label", "annotator", "group", "identity", "reference_label")
_FIELD_NAMES = {"rel": "path", "text": "text", "label": "label", "annotator": "annotator", "group": "group",
                "identity": "identity", "reference_label": "reference label"}

Problem = tuple[str, str]


def shown_text(value: str, limit: int) -> str:
    """``value`` as a report shows it: valid UTF-8 (a non-UTF-8 file name's bytes as ``\\xNN`` escapes, a lone
    surrogate as ``\\udNNN``) and at most ``limit`` characters."""
    if not _encodable(value):
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that no file name's byte made (from a JSON escape)
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class ImportReport:
    """What an import did. ``problems`` holds one dict per skipped row: row, path, problem, detail (row 0: a
    note on the whole source, nothing skipped)."""

    spec: str
    added: int = 0
    already_present: int = 0
    annotations: int = 0
    labels_added: list[str] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(1 for p in self.problems if p["row"] != 0)

    def problem(self, row: int, path: str | None, problem: str, detail: str) -> None:
        """Record one problem; ``path`` and ``detail`` are made printable and clipped (:func:`shown_text`)."""
        self.problems.append({"row": row, "path": None if path is None else shown_text(str(path), _REPORT_PATH_CHARS),
                              "problem": problem, "detail": shown_text(detail, _REPORT_DETAIL_CHARS)})

    def summary(self) -> str:
        """One line for people: what was added, present, skipped, labelled."""
        return (f"Imported {self.added} items ({self.already_present} already present, {self.skipped} rows skipped, "
                f"{self.annotations} labels)")

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.spec,
            "added": self.added,
            "already_present": self.already_present,
            "skipped": self.skipped,
            "annotations": self.annotations,
            "labels_added": self.labels_added,
            "problems": self.problems,
        }


@dataclass
class _Candidate:
    row: int
    rel: str | None            # media path relative to the root (None for text-only items)
    text: str | None = None
    label: str | None = None
    annotator: str | None = None
    group: str | None = None
    identity: str | None = None
    reference_label: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def shown(self) -> str | None:
        """What the report names the row by: its path, else its text."""
        return self.rel or self.text


@dataclass(frozen=True)
class _SourceKey:
    """What identifies a source in the ``sources`` table; the row is written only with the import's items."""

    root: Path
    kind: str
    spec: str


def import_source(
    store: Store,
    source: str | Path,
    *,
    manifest: bool | None = None,
    labels_from_folders: str | None = None,
    media_root: str | Path | None = None,
    annotator: str = DEFAULT_ANNOTATOR,
    add_labels: bool = False,
    progress: Callable[[int, int], None] | None = None,
    group_pattern: str | None = None,
    confine_to: Sequence[str | Path] | None = None,
    by: str | None = None,
) -> ImportReport:
    """Import a folder, or a manifest (``manifest=None`` guesses by the suffix: .csv, .tsv, .jsonl).
    ``by``: who imports (needs the ``import`` permission; audited).
    ``group_pattern`` (folders only): see :func:`import_folder`. ``confine_to``: the media roots the import
    may read below (None: anything readable); see the module docstring."""
    if not _exists(source):
        raise ValidationError(f"The 'source' parameter must be an existing folder or manifest file. Got {str(source)!r}.")
    source = Path(source)
    if manifest is None:
        manifest = source.is_file()
    if manifest:
        return import_manifest(store, source, media_root=media_root, annotator=annotator, add_labels=add_labels,
                               progress=progress, confine_to=confine_to, by=by)
    return import_folder(store, source, labels_from_folders=labels_from_folders, annotator=annotator,
                         add_labels=add_labels, progress=progress, group_pattern=group_pattern, confine_to=confine_to,
                         by=by)


def _exists(path: Any) -> bool:
    """True for a str or path naming something that exists; False for anything else (a NUL byte, a name too long)."""
    try:
        return isinstance(path, (str, Path)) and "\0" not in str(path) and Path(path).exists()
    except (OSError, ValueError):
        return False


def _confinement(confine_to: Sequence[str | Path] | None, *paths: str | Path | None) -> list[Path] | None:
    """The resolved media roots, after checking that each of ``paths`` (None skipped) lies below one of them;
    None when the import is not confined."""
    if confine_to is None:
        return None
    roots = resolve_roots(confine_to)
    for path in paths:
        if path is not None:
            check_under_roots(path, roots)
    return roots


def request_import(
    store: Store,
    source: str | Path,
    *,
    manifest: bool | None = None,
    labels_from_folders: str | None = None,
    media_root: str | Path | None = None,
    annotator: str = DEFAULT_ANNOTATOR,
    add_labels: bool = False,
    requested_by: str | None = None,
    group_pattern: str | None = None,
    confine_to: Sequence[str | Path] | None = None,
) -> tuple[int, bool]:
    """Queue an ``import`` job for the worker (the arguments of :func:`import_source`); returns
    ``(job_id, coalesced)`` as :func:`core.jobs.queue.request_job` does.

    Only the cheap checks run here (the source exists and, with ``confine_to``, lies below the media roots; the
    label mode is known); paths are made absolute, since the worker may run in another folder. The browser
    passes ``confine_to=media_roots()``; the roots travel in the job's parameters, so the worker confines each
    file the same way.
    """
    from core.jobs import queue as jobs

    store.authorize(store.actor(requested_by), "import")
    params = _import_params({"source": str(source), "manifest": manifest, "labels_from_folders": labels_from_folders,
                             "media_root": None if media_root is None else str(media_root), "annotator": annotator,
                             "add_labels": add_labels, "group_pattern": group_pattern,
                             "confine_to": None if confine_to is None else [str(r) for r in confine_to]})
    return jobs.request_job(store, "import", params, requested_by=requested_by)


_JOB_PARAMS = ("source", "manifest", "labels_from_folders", "media_root", "annotator", "add_labels", "group_pattern",
               "confine_to")


def _import_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validate an import job's parameters; returns them with absolute paths."""
    unknown = sorted(set(params) - set(_JOB_PARAMS))
    check_param("the import job", "params", unknown, not unknown, f"made of {', '.join(_JOB_PARAMS)}")
    source = params.get("source")
    check_param("import", "source", source, isinstance(source, str) and _exists(source),
                "an existing folder or manifest file on the server")
    check_choice("import", "labels_from_folders", params.get("labels_from_folders"), LABEL_MODES)
    check_param("import", "manifest", params.get("manifest"), params.get("manifest") in (None, True, False),
                "true, false or null (guess from the suffix)")
    annotator = validate_annotator_name(params.get("annotator", DEFAULT_ANNOTATOR))
    root = params.get("media_root")
    check_param("import", "media_root", root, root is None or (isinstance(root, str) and _exists(root)
                                                               and Path(root).is_dir()),
                "an existing folder, or null for the manifest's folder")
    pattern = params.get("group_pattern")
    if pattern is not None:
        group_regex(pattern)
    confine = params.get("confine_to")
    check_param("import", "confine_to", confine, confine is None or (
        isinstance(confine, list) and all(isinstance(r, str) and r and "\0" not in r for r in confine)),
                "a list of media root folders, or null for an unconfined import (the command line)")
    roots = _confinement(confine, source, root)
    return {"source": str(Path(source).resolve()), "manifest": params.get("manifest"), "group_pattern": pattern,
            "labels_from_folders": params.get("labels_from_folders"),
            "media_root": None if root is None else str(Path(root).resolve()), "annotator": annotator,
            "add_labels": bool(params.get("add_labels", False)),
            "confine_to": None if roots is None else [str(r) for r in roots]}


def run_import_job(
    store: Store,
    params: dict[str, Any],
    *,
    progress: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    by: str | None = None,
) -> ImportReport:
    """Run an ``import`` job's work: :func:`import_source` with progress as job-row dicts; ``by`` is who
    requested the job (the audit log records the import under them).

    ``progress`` receives ``{"phase": "check files", "step": k, "total": n}`` while files are decoded, then
    ``{"phase": "done", "step": n, "total": n, "report": {...}}`` with the counts and the first 200 problems.
    ``should_cancel`` is polled at each progress step; the import then stops before writing anything
    (:class:`~core.errors.JobCancelled`). The job's ``confine_to`` roots are checked again here (the source may
    have changed since the request) and applied to every file.
    """
    p = _import_params(params)
    total_seen = {"n": 0}

    def on_files(k: int, total: int) -> None:
        total_seen["n"] = total
        if should_cancel is not None and should_cancel():
            raise JobCancelled("import cancelled on request; nothing was imported")
        if progress is not None:
            progress({"phase": "check files", "step": k, "total": total})

    if progress is not None:
        progress({"phase": "list files", "step": 0, "total": 1})
    report = import_source(store, p["source"], manifest=p["manifest"], labels_from_folders=p["labels_from_folders"],
                           media_root=p["media_root"], annotator=p["annotator"], add_labels=p["add_labels"],
                           progress=on_files, group_pattern=p["group_pattern"], confine_to=p["confine_to"], by=by)
    if progress is not None:
        d = report.as_dict()
        d["problems"] = d["problems"][:200]
        n = total_seen["n"]
        progress({"phase": "done", "step": n, "total": n, "report": d})
    return report


def group_regex(pattern: Any) -> re.Pattern:
    """The compiled ``group_pattern`` of a folder import; a bad one is refused by name."""
    try:
        ok = isinstance(pattern, str) and bool(pattern)
        regex = re.compile(pattern) if ok else None
    except re.error as exc:
        raise ValidationError(f"The 'group_pattern' parameter of import must be a regular expression. Got "
                              f"{pattern!r} ({exc}).")
    check_param("import", "group_pattern", pattern, regex is not None, "a non-empty regular expression")
    return regex


def _group_of(regex: re.Pattern, name: str) -> str | None:
    """The first group (or the whole match) of ``regex`` in the file ``name``; None when it does not match."""
    m = regex.search(name)
    if m is None:
        return None
    return m.group(1) if m.groups() and m.group(1) is not None else m.group(0)


def import_folder(
    store: Store,
    folder: str | Path,
    *,
    labels_from_folders: str | None = None,
    annotator: str = DEFAULT_ANNOTATOR,
    add_labels: bool = False,
    progress: Callable[[int, int], None] | None = None,
    group_pattern: str | None = None,
    confine_to: Sequence[str | Path] | None = None,
    by: str | None = None,
) -> ImportReport:
    """Import every media file below ``folder`` (recursively, in sorted order); ``by`` is who imports.

    Parameters
    ----------
    labels_from_folders : {None, "reference", "initial"}
        What the name of a file's class sub-folder becomes: nothing, its reference label (ground truth for
        evaluation), or an initial vote by ``annotator``.
    group_pattern : str or None
        A regular expression searched in each file name whose first group (or whole match) becomes the item's
        group: the camera of a re-identification crop (``"^(\\d+)_"`` for ``01_3.png``, ``"_c(\\d+)"`` for
        Market-1501's ``0001_c1s1_000151_01.jpg``) or an audio clip's speaker. A file it does not match is
        imported without a group and reported (``no_group``).
    confine_to : sequence of paths or None
        The media roots: ``folder`` must lie below one, and a file (a symlink) that leads outside them is an
        ``outside_roots`` row. None (the command line): not confined.
    """
    check_choice("import", "labels_from_folders", labels_from_folders, LABEL_MODES)
    annotator = validate_annotator_name(annotator)
    regex = None if group_pattern is None else group_regex(group_pattern)
    if not _exists(folder) or not Path(folder).is_dir():
        raise ValidationError(f"The 'folder' parameter must be a folder. Got {str(folder)!r}.")
    roots = _confinement(confine_to, folder)
    root = Path(folder).resolve()
    report = ImportReport(spec=str(root))
    candidates = _folder_candidates(store, root, report, labels_from_folders=labels_from_folders, annotator=annotator,
                                    regex=regex)
    _import_candidates(store, _SourceKey(root, "folder", str(root)), candidates, report, add_labels=add_labels,
                       progress=progress, from_folder=True, roots=roots, by=by)
    return report


def _listed_file(p: Path) -> bool:
    """Files to import: not hidden; one that cannot even be stat'ed is kept, to be reported as unreadable."""
    if p.name.startswith("."):
        return False
    try:
        return p.is_file()
    except OSError:
        return True


def _folder_candidates(store: Store, root: Path, report: ImportReport, *, labels_from_folders: str | None,
                       annotator: str, regex: re.Pattern | None) -> list[_Candidate]:
    """One candidate per file below ``root``, with its class folder's label and its group; the notes
    ``no_class_folder`` and ``no_group`` are informational (row 0): the file is still imported."""
    media_kind = _MEDIA_KIND[store.modality]
    candidates = []
    files = sorted(p for p in root.rglob("*") if _listed_file(p))
    for k, p in enumerate(files, start=1):
        rel = p.relative_to(root).as_posix()
        cls = p.parent.name if p.parent != root else None
        c = _Candidate(row=k, rel=rel)
        is_media = media.kind_of(p) == media_kind
        if labels_from_folders and cls is None and is_media:
            report.problem(0, rel, "no_class_folder", "file is not inside a class sub-folder; imported without a label")
        if cls is not None and labels_from_folders == "reference":
            c.reference_label = cls
        elif cls is not None and labels_from_folders == "initial":
            c.label, c.annotator = cls, annotator
        if regex is not None and is_media:
            c.group = _group_of(regex, p.name)
            if c.group is None:
                report.problem(0, rel, "no_group", f"file name does not match the group pattern {regex.pattern!r}; "
                               "imported without a group")
        candidates.append(c)
    return candidates


def import_manifest(
    store: Store,
    manifest_path: str | Path,
    *,
    media_root: str | Path | None = None,
    annotator: str = DEFAULT_ANNOTATOR,
    add_labels: bool = False,
    progress: Callable[[int, int], None] | None = None,
    confine_to: Sequence[str | Path] | None = None,
    by: str | None = None,
) -> ImportReport:
    """Import the rows of a CSV/TSV (with a header) or JSON Lines manifest; see the module docstring;
    ``by`` is who imports.
    ``confine_to``: the media roots the manifest (and ``media_root``) must lie below; a row whose file leads
    outside them is an ``outside_roots`` row. None (the command line): not confined."""
    annotator = validate_annotator_name(annotator)
    if not _exists(manifest_path) or not Path(manifest_path).is_file():
        raise ValidationError(f"The 'manifest' parameter must be an existing file. Got {str(manifest_path)!r}.")
    if media_root is not None and not (_exists(media_root) and Path(media_root).is_dir()):
        raise ValidationError(f"The 'media_root' parameter of import must be an existing folder. "
                              f"Got {str(media_root)!r}.")
    roots = _confinement(confine_to, manifest_path, media_root)
    manifest_path = Path(manifest_path).resolve()
    root = Path(media_root).resolve() if media_root else manifest_path.parent
    report = ImportReport(spec=str(manifest_path))
    candidates = []
    for row_no, raw in _read_manifest(manifest_path, report):
        c = _candidate_from_row(row_no, raw, annotator, report, store.modality)
        if c is not None:
            candidates.append(c)
    _import_candidates(store, _SourceKey(root, "manifest", str(manifest_path)), candidates, report,
                       add_labels=add_labels, progress=progress, from_folder=False, roots=roots, by=by)
    return report


def _read_manifest(path: Path, report: ImportReport) -> Iterator[tuple[int, dict]]:
    """``(row number, normalised row)`` of each readable row; unreadable rows go to ``report``."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path, report)
    if suffix not in (".csv", ".tsv", ".txt"):
        raise ValidationError(
            f"The 'manifest' parameter must be a .csv, .tsv or .jsonl file. Got {str(path)!r}."
        )
    return _read_csv(path, report, delimiter="\t" if suffix == ".tsv" else ",")


def _read_jsonl(path: Path, report: ImportReport) -> Iterator[tuple[int, dict]]:
    seen_unknown: set[str] = set()
    with open(path, "rb") as f:
        for k, raw in enumerate(f, start=1):
            if k == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.problem(k, None, "bad_encoding", f"line {k} is not UTF-8 (byte {raw[exc.start]:#04x} at column "
                               f"{exc.start + 1}); JSON Lines files must be UTF-8")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                report.problem(k, None, "bad_json", f"line {k} is not valid JSON: {exc.msg}")
                continue
            except RecursionError:
                report.problem(k, None, "bad_json", f"line {k} nests JSON too deeply to read")
                continue
            if not isinstance(obj, dict):
                report.problem(k, None, "bad_json", f"line {k} is a JSON {type(obj).__name__}, not an object")
                continue
            yield k, _normalise_columns(obj, report, seen_unknown)


def _first_decode_error(path: Path, encoding: str) -> tuple[int, int] | None:
    """``(line, byte value)`` of the first byte of ``path`` that ``encoding`` cannot decode, or None; reads the
    file in 1 MiB blocks with an incremental decoder (a character split across two blocks is fine)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return line + exc.object.count(b"\n", 0, exc.start), exc.object[exc.start]
            line += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # the file ends inside a character
        return line, exc.object[exc.start]
    return None


def manifest_encoding(path: Path, report: ImportReport) -> str:
    """The encoding to read a CSV manifest with; a fall-back from UTF-8 is noted in ``report`` (row 0)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not head.startswith(codecs.BOM_UTF32_LE):
        return "utf-16"
    bad = _first_decode_error(path, "utf-8")
    if bad is None:
        return "utf-8-sig"
    encoding = next((e for e in FALLBACK_ENCODINGS if _first_decode_error(path, e) is None), "latin-1")
    report.problem(0, None, "not_utf8",
                   f"the manifest is not UTF-8 (byte {bad[1]:#04x} on line {bad[0]}); it was read as {encoding}. "
                   "Check that accented names and labels read as meant, or save it as UTF-8 (Excel: 'CSV UTF-8')")
    return encoding


def _read_csv(path: Path, report: ImportReport, *, delimiter: str) -> Iterator[tuple[int, dict]]:
    """Rows of a CSV/TSV manifest with a header; ragged and unparsable rows are reported and skipped."""
    seen_unknown: set[str] = set()
    for k, record in read_csv_records(path, report, delimiter=delimiter):
        yield k, _normalise_columns(record, report, seen_unknown)


def read_csv_records(path: Path, report: ImportReport, *, delimiter: str = ",") -> Iterator[tuple[int, dict]]:
    """``(row number, {header: field})`` of each well-formed row of a CSV with a header, read in the encoding
    :func:`manifest_encoding` picks; a row with more or fewer fields than the header (``ragged_row``) or one the
    csv module cannot parse (``bad_csv_row``) is a report entry and skipped. The one CSV reader of imports and
    of ``python -m core annotate``."""
    encoding = manifest_encoding(path, report)
    csv.field_size_limit(MAX_FIELD_CHARS)  # process-wide; every reader of the engine wants long fields
    with open(path, encoding=encoding, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = _csv_header(reader, path)
        k = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                k += 1
                report.problem(k, None, "bad_csv_row", f"line {reader.line_num}: {exc} (the longest field read is "
                               f"{MAX_FIELD_CHARS} characters); row skipped")
                continue
            if not fields:  # a blank line
                continue
            k += 1
            if len(fields) != len(header):
                report.problem(k, None, "ragged_row", f"line {reader.line_num} has {_fields(len(fields))}, the header "
                               f"has {_fields(len(header))}; row skipped (quote fields holding a {delimiter!r})")
                continue
            yield k, dict(zip(header, fields))


def _fields(n: int) -> str:
    return f"{n} field" + ("" if n == 1 else "s")


def _csv_header(reader: Any, path: Path) -> list[str]:
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise ValidationError(f"The manifest {str(path)!r} has an unreadable header row ({exc}).") from None
    if not any(h.strip() for h in header):
        raise ValidationError(f"The manifest {str(path)!r} has no header row; the first row must name the columns.")
    return header


def _normalise_columns(row: dict, report: ImportReport, seen_unknown: set[str]) -> dict:
    out: dict[str, Any] = {"meta": {}}
    for key, value in row.items():
        name = key.strip().lower()
        name = COLUMN_ALIASES.get(name, name)
        if isinstance(value, str):
            value = value.strip()
        if value in ("", None):
            continue
        if name.startswith("meta."):
            out["meta"][key.strip()[5:]] = value
        elif name in MANIFEST_COLUMNS:
            out[name] = str(value)
        elif key not in seen_unknown:
            seen_unknown.add(key)
            report.problem(0, None, "unknown_column",
                           f"unknown column {key!r} ignored; allowed: {', '.join(MANIFEST_COLUMNS)}, "
                           f"aliases {', '.join(COLUMN_ALIASES)}, or meta.<name> for metadata")
    return out


def _candidate_from_row(row_no: int, raw: dict, annotator: str, report: ImportReport, modality: str) -> _Candidate | None:
    path = raw.get("path")
    text = raw.get("text")
    if path is None and modality != "text":
        report.problem(row_no, None, "missing_path", f"no 'path' on this row; a {modality} project needs a media file")
        return None
    if path is None and not text:
        report.problem(row_no, None, "missing_text", "a text item needs a non-empty 'text'")
        return None
    if modality == "image+text" and not text:
        report.problem(row_no, path, "missing_text", "an image+text project needs a caption ('text') on each row")
        return None
    who = raw.get("annotator")
    if raw.get("label") and who is not None:
        try:
            who = validate_person_name(who)
        except ValidationError as exc:
            report.problem(row_no, path or text, "bad_annotator", f"{exc} Row skipped.")
            return None
    return _Candidate(
        row=row_no, rel=path, text=text, label=raw.get("label"),
        annotator=who or (annotator if raw.get("label") else None),
        group=raw.get("group"), identity=raw.get("identity"), reference_label=raw.get("reference_label"),
        meta=raw.get("meta") or {},
    )


def _value_problem(c: _Candidate) -> Problem | None:
    """A value the store cannot keep: not valid UTF-8 (a file name's stray bytes, a lone surrogate from a JSON
    escape), or a NUL byte in the path."""
    for name in _STRING_FIELDS:
        value = getattr(c, name)
        if isinstance(value, str) and not _encodable(value):
            what = "file name" if name == "rel" else _FIELD_NAMES[name]
            fix = "rename the file (e.g. convmv -f latin1 -t utf8)" if name == "rel" else "fix the row"
            return ("bad_encoding", f"the {what} {shown_text(value, 120)!r} is not valid UTF-8; {fix}")
    if c.rel is not None and "\0" in c.rel:
        return ("bad_path", "the path holds a NUL byte (\\x00); fix the row")
    return None


def _label_problem(c: _Candidate) -> Problem | None:
    """Normalise the row's label and reference label (:func:`validate_label_name`); a refused one is a problem."""
    try:
        c.label = None if c.label is None else validate_label_name(c.label)
        c.reference_label = None if c.reference_label is None else validate_label_name(c.reference_label)
    except ValidationError as exc:
        return ("bad_label", f"{exc} Row skipped.")
    return None


def _locate(c: _Candidate, root: Path, roots: list[Path] | None, modality: str, from_folder: bool
            ) -> Path | Problem | None:
    """The file of ``c`` (absolute, resolved; ``c.rel`` rewritten relative to ``root``), or its problem, or None
    for a file a folder import passes over silently (a README or LICENSE)."""
    try:
        p = Path(c.rel)
        full = (p if p.is_absolute() else root / p).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        return ("bad_path", f"cannot resolve the path: {exc}")
    if roots is not None and not any(full.is_relative_to(r) for r in roots):
        return ("outside_roots", "the path leads outside the media roots (an absolute or '../' path, or a symlink "
                                 "that leaves them); imports from the browser read only below LABELTOOL_MEDIA_ROOTS")
    if not full.is_relative_to(root):
        return ("escapes_root", f"the path leads outside the media root {root}")
    c.rel = full.relative_to(root).as_posix()
    kind = media.kind_of(full)
    if kind != _MEDIA_KIND[modality]:
        if from_folder and kind is None and full.name.lower() in {"readme", "readme.md", "license"}:
            return None
        return ("wrong_modality",
                f"a {kind or 'unknown'} file ({full.suffix or 'no extension'}) in a {modality} project")
    try:
        found = full.is_file()
    except OSError as exc:
        return ("unreadable", f"cannot read the file: {exc}")
    return full if found else ("missing_file", f"no file at {full}")


def _check_rows(candidates: list[_Candidate], root: Path, roots: list[Path] | None, modality: str,
                from_folder: bool, report: ImportReport) -> list[tuple[_Candidate, Path | None]]:
    """Step 1: the rows whose values the store can keep and whose file exists, with that file (None for a
    text-only row); every other row is reported."""
    checked: list[tuple[_Candidate, Path | None]] = []
    for c in candidates:
        problem = _value_problem(c) or _label_problem(c)
        if problem is not None:
            report.problem(c.row, c.shown, *problem)
            continue
        if c.rel is None:
            checked.append((c, None))
            continue
        located = _locate(c, root, roots, modality, from_folder)
        if isinstance(located, tuple):
            report.problem(c.row, c.rel, *located)
        elif located is not None:
            checked.append((c, located))
    return checked


def _check_file(c: _Candidate, full: Path | None, modality: str, existing_uris: set[str], cap: int
                ) -> tuple[Problem | None, str | None, str]:
    """Step 2 for one row: ``(problem, content hash, uri)``; the file is decoded once (a new uri only)."""
    uri = _uri(c)
    if uri in existing_uris:
        return None, None, uri
    if full is None:
        return None, media.text_hash(c.text or ""), uri
    media_kind = _MEDIA_KIND[modality]
    try:
        if media_kind == "text":
            problem, text = media.check_text_file(full)
            if problem is None:
                c.text = text
            return problem, None if problem else media.file_hash(full), uri
        problem = media.check_media(full, media_kind, max_image_pixels=cap)
        if problem is not None:
            return problem, None, uri
        h = media.file_hash(full)
    except Exception as exc:  # one unreadable file (permissions, I/O error, a decoder's bug) is one bad row
        return ("unreadable", f"cannot read the file: {type(exc).__name__}: {exc}"), None, uri
    if modality == "image+text":
        h = media.text_hash(h + "\0" + (c.text or ""))
    return None, h, uri


def _check_files(checked: list[tuple[_Candidate, Path | None]], modality: str, existing_uris: set[str],
                 progress: Callable[[int, int], None] | None) -> list[tuple[Problem | None, str | None, str]]:
    """Step 2: decode each new file once, in threads (PIL and libsndfile release the GIL), reporting progress."""
    cap = media.max_pixels() if _MEDIA_KIND[modality] == "image" else 0   # a bad LABELTOOL_MAX_PIXELS: refused here
    results = []
    total = len(checked)
    every = max(1, min(500, total // 50))  # about 50 progress reports, at least one per 500 files
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        done = pool.map(lambda entry: _check_file(entry[0], entry[1], modality, existing_uris, cap), checked)
        for k, res in enumerate(done, start=1):
            results.append(res)
            if progress and (k % every == 0 or k == total):
                progress(k, total)
    finally:  # a progress callback that raises (cancel) must not wait for every remaining file
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _import_candidates(
    store: Store,
    key: _SourceKey,
    candidates: list[_Candidate],
    report: ImportReport,
    *,
    add_labels: bool,
    progress: Callable[[int, int], None] | None,
    from_folder: bool,
    roots: list[Path] | None,
    by: str | None = None,
) -> None:
    modality = store.modality
    source_id = store.find_source(key.root, kind=key.kind, spec=key.spec)
    existing_uris = set() if source_id is None else store.existing_uris(source_id)
    checked = _check_rows(candidates, key.root, roots, modality, from_folder, report)
    results = _check_files(checked, modality, existing_uris, progress)

    # 3. labels
    label_set = set(store.labels())
    new_labels: list[str] = []
    wanted = {lab for c, _ in checked for lab in (c.label, c.reference_label) if lab}
    if not label_set or add_labels:
        new_labels = sorted((lab for lab in wanted if lab not in label_set), key=_natural_key)
    allowed = label_set | set(new_labels)

    # 4. decide each row: new item, extra vote for an item, duplicate, or bad
    known_hashes = store.item_ids_by_hash([h for _, h, _ in results if h])
    new_rows: dict[str, dict] = {}      # uri -> item row
    seen_hash: dict[str, tuple[int, str]] = {}
    votes: list[tuple[str, str, str]] = []  # (uri, annotator, label)
    vote_keys: dict[tuple[str, str], int] = {}
    present_seen: set[str] = set()
    for (c, full), (problem, h, uri) in zip(checked, results):
        bad_label = next((lab for lab in (c.label, c.reference_label) if lab and lab not in allowed), None)
        if bad_label is not None:
            report.problem(c.row, c.shown, "unknown_label",
                           f"label {bad_label!r} is not in the label set {sorted(label_set)}; "
                           "add it (import --add-labels) or fix the row")
            continue
        if problem is not None:
            report.problem(c.row, c.shown, *problem)
            continue
        if uri in existing_uris:
            if uri not in present_seen:
                present_seen.add(uri)
                report.already_present += 1
        elif uri in new_rows:
            pass  # the same item on another row: one more vote, handled below
        else:
            if h in known_hashes or h in seen_hash:
                first = f"item {known_hashes[h]}" if h in known_hashes else f"row {seen_hash[h][0]} ({seen_hash[h][1]})"
                report.problem(c.row, c.shown, "duplicate", f"same content as {first}; skipped")
                continue
            seen_hash[h] = (c.row, c.rel or (c.text or "")[:40])
            new_rows[uri] = {
                "uri": uri, "modality": modality, "text": c.text, "group": c.group,
                "identity": c.identity, "meta": c.meta, "reference_label": c.reference_label, "content_hash": h,
            }
        if c.label:
            vote = (uri, c.annotator or DEFAULT_ANNOTATOR)
            if vote in vote_keys:
                report.problem(c.row, c.shown, "duplicate",
                               f"a second label by {vote[1]!r} for the same item (row {vote_keys[vote]}); skipped")
                continue
            vote_keys[vote] = c.row
            votes.append((uri, vote[1], c.label))
    _write(store, key, source_id, list(new_rows.values()), votes, new_labels, report, by=by)


def _write(store: Store, key: _SourceKey, source_id: int | None, new_rows: list[dict],
           votes: list[tuple[str, str, str]], new_labels: list[str], report: ImportReport, *,
           by: str | None = None) -> None:
    """Step 5, all or nothing: the source, labels, items, votes and the import's record in one transaction.
    With nothing to add, a source never imported before writes nothing at all (no orphan ``sources`` row); a
    known one records the (empty) import."""
    if not new_rows and not votes and source_id is None:
        return
    actor = store.actor(by)
    with store.transaction() as conn:
        role = store.authorize(actor, "import", conn)
        if new_rows or votes:
            source_id = store.add_source(key.root, kind=key.kind, spec=key.spec)
            if new_labels:
                report.labels_added = store.add_labels(new_labels, by=actor, permission="import")
            report.added = len(store.insert_items(conn, [dict(r, source_id=source_id) for r in new_rows]))
            report.annotations = _write_votes(store, source_id, votes, actor)
        store.record_import(source_id=source_id, spec=report.spec, added=report.added,
                            already_present=report.already_present, skipped=report.skipped,
                            annotations=report.annotations, report=report.problems)
        store.audit(conn, actor, "import", role=role, n=report.added, spec=report.spec, annotations=report.annotations,
                    already_present=report.already_present, skipped=report.skipped)


def _write_votes(store: Store, source_id: int, votes: list[tuple[str, str, str]], actor: str) -> int:
    """The rows' votes, one ``annotate_many`` per annotator inside the caller's transaction; returns how many
    were new."""
    if not votes:
        return 0
    ids = store.item_ids_for_source(source_id)
    by_annotator: dict[str, list[tuple[int, str]]] = {}
    for uri, who, label in votes:
        if uri in ids:
            by_annotator.setdefault(who, []).append((ids[uri], label))
    return sum(len(store.annotate_many(pairs, annotator=who, kind="human", skip_existing=True, by=actor,
                                       permission="import"))
               for who, pairs in by_annotator.items())


def _uri(c: _Candidate) -> str:
    if c.rel is None:
        return "text:" + media.text_hash(c.text or "")[:20]
    if c.text and c.rel is not None and not c.rel.endswith(".txt"):
        return f"{c.rel}#t={media.text_hash(c.text)[:12]}"
    return c.rel


def _natural_key(s: str) -> tuple:
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def parse_labels(text: str) -> list[str]:
    """Split a comma-separated label list from the command line."""
    return [validate_label_name(t) for t in text.split(",") if t.strip()]
