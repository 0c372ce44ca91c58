"""Import items into a project from a folder of media files or from a CSV/JSONL manifest.

Bad rows are reported (which row, what, why) and skipped; the rest imports in one transaction; nothing
already stored changes; importing the same source again adds nothing.

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

The web app does not import in its script thread: :func:`request_import` queues an ``import`` job, which the
worker runs through :func:`run_import_job`, reporting progress in the job row.
"""
from __future__ import annotations

import csv
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from core.io import media
from core.errors import JobCancelled, ValidationError, check_choice, check_param
from core.store.project_store import Store, validate_label_name

MANIFEST_COLUMNS = ("path", "text", "label", "annotator", "group", "identity", "reference_label")
COLUMN_ALIASES = {"caption": "text", "speaker": "group", "camera": "group", "file": "path", "filename": "path"}
LABEL_MODES = (None, "reference", "initial")
DEFAULT_ANNOTATOR = "import"
_MEDIA_KIND = {"image": "image", "image+text": "image", "audio": "audio", "text": "text"}


@dataclass
class ImportReport:
    """What an import did. ``problems`` holds one dict per skipped row: row, path, problem, detail."""

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
        self.problems.append({"row": row, "path": path, "problem": problem, "detail": detail})

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
) -> ImportReport:
    """Import a folder, or a manifest (``manifest=None`` guesses by the suffix: .csv, .tsv, .jsonl).
    ``group_pattern`` (folders only): see :func:`import_folder`."""
    source = Path(source)
    if not source.exists():
        raise ValidationError(f"The 'source' parameter must be an existing folder or manifest file. Got {str(source)!r}.")
    if manifest is None:
        manifest = source.is_file()
    if manifest:
        return import_manifest(store, source, media_root=media_root, annotator=annotator, add_labels=add_labels,
                               progress=progress)
    return import_folder(store, source, labels_from_folders=labels_from_folders, annotator=annotator,
                         add_labels=add_labels, progress=progress, group_pattern=group_pattern)


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
) -> tuple[int, bool]:
    """Queue an ``import`` job for the worker (the arguments of :func:`import_source`); returns
    ``(job_id, coalesced)`` as :func:`core.jobs.queue.request_job` does.

    Only the cheap checks run here (the source exists, the label mode is known); paths are made absolute,
    since the worker may run in another folder.
    """
    from core.jobs import queue as jobs

    params = _import_params({"source": str(source), "manifest": manifest, "labels_from_folders": labels_from_folders,
                             "media_root": None if media_root is None else str(media_root), "annotator": annotator,
                             "add_labels": add_labels, "group_pattern": group_pattern})
    return jobs.request_job(store, "import", params, requested_by=requested_by)


def _import_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validate an import job's parameters; returns them with absolute paths."""
    known = ("source", "manifest", "labels_from_folders", "media_root", "annotator", "add_labels", "group_pattern")
    unknown = sorted(set(params) - set(known))
    check_param("the import job", "params", unknown, not unknown, f"made of {', '.join(known)}")
    source = params.get("source")
    check_param("import", "source", source, isinstance(source, str) and Path(source).exists(),
                "an existing folder or manifest file on the server")
    check_choice("import", "labels_from_folders", params.get("labels_from_folders"), LABEL_MODES)
    check_param("import", "manifest", params.get("manifest"), params.get("manifest") in (None, True, False),
                "true, false or null (guess from the suffix)")
    annotator = params.get("annotator", DEFAULT_ANNOTATOR)
    check_param("import", "annotator", annotator, isinstance(annotator, str) and 0 < len(annotator.strip()) <= 100,
                "a non-empty name of at most 100 characters")
    root = params.get("media_root")
    check_param("import", "media_root", root, root is None or (isinstance(root, str) and Path(root).is_dir()),
                "an existing folder, or null for the manifest's folder")
    pattern = params.get("group_pattern")
    if pattern is not None:
        group_regex(pattern)
    return {"source": str(Path(source).resolve()), "manifest": params.get("manifest"), "group_pattern": pattern,
            "labels_from_folders": params.get("labels_from_folders"),
            "media_root": None if root is None else str(Path(root).resolve()), "annotator": annotator.strip(),
            "add_labels": bool(params.get("add_labels", False))}


def run_import_job(
    store: Store,
    params: dict[str, Any],
    *,
    progress: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> ImportReport:
    """Run an ``import`` job's work: :func:`import_source` with progress as job-row dicts.

    ``progress`` receives ``{"phase": "check files", "step": k, "total": n}`` while files are decoded, then
    ``{"phase": "done", "step": n, "total": n, "report": {...}}`` with the counts and the first 200 problems.
    ``should_cancel`` is polled at each progress step; the import then stops before writing anything
    (:class:`~core.errors.JobCancelled`).
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
                           progress=on_files, group_pattern=p["group_pattern"])
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
) -> ImportReport:
    """Import every media file below ``folder`` (recursively, in sorted order).

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
    """
    check_choice("import", "labels_from_folders", labels_from_folders, LABEL_MODES)
    regex = None if group_pattern is None else group_regex(group_pattern)
    root = Path(folder).resolve()
    if not root.is_dir():
        raise ValidationError(f"The 'folder' parameter must be a folder. Got {str(folder)!r}.")
    report = ImportReport(spec=str(root))
    candidates = []
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for k, p in enumerate(files, start=1):
        rel = p.relative_to(root).as_posix()
        cls = p.parent.name if p.parent != root else None
        c = _Candidate(row=k, rel=rel)
        if labels_from_folders and cls is None and media.kind_of(p) == _MEDIA_KIND[store.modality]:
            report.problem(k, rel, "no_class_folder", "file is not inside a class sub-folder; imported without a label")
        if cls is not None and labels_from_folders == "reference":
            c.reference_label = cls
        elif cls is not None and labels_from_folders == "initial":
            c.label, c.annotator = cls, annotator
        if regex is not None and media.kind_of(p) == _MEDIA_KIND[store.modality]:
            c.group = _group_of(regex, p.name)
            if c.group is None:
                report.problem(k, rel, "no_group", f"file name does not match the group pattern {group_pattern!r}; "
                               "imported without a group")
        candidates.append(c)
    # a file outside any class folder is still imported: its problem row is informational only
    report.problems = [dict(p, row=0) if p["problem"] in ("no_class_folder", "no_group") else p
                       for p in report.problems]
    source_id = store.add_source(root, kind="folder", spec=str(root))
    _import_candidates(store, source_id, root, candidates, report, add_labels=add_labels, progress=progress,
                       from_folder=True)
    return report


def import_manifest(
    store: Store,
    manifest_path: str | Path,
    *,
    media_root: str | Path | None = None,
    annotator: str = DEFAULT_ANNOTATOR,
    add_labels: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import the rows of a CSV/TSV (with a header) or JSON Lines manifest; see the module docstring."""
    manifest_path = Path(manifest_path).resolve()
    root = Path(media_root).resolve() if media_root else manifest_path.parent
    report = ImportReport(spec=str(manifest_path))
    candidates = []
    for row_no, raw in _read_manifest(manifest_path, report):
        c = _candidate_from_row(row_no, raw, annotator, report, store.modality)
        if c is not None:
            candidates.append(c)
    source_id = store.add_source(root, kind="manifest", spec=str(manifest_path))
    _import_candidates(store, source_id, root, candidates, report, add_labels=add_labels, progress=progress,
                       from_folder=False)
    return report


def _read_manifest(path: Path, report: ImportReport) -> Iterator[tuple[int, dict]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        seen_unknown: set[str] = set()
        with open(path, encoding="utf-8") as f:
            for k, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    report.problem(k, None, "bad_json", f"line {k} is not valid JSON: {exc.msg}")
                    continue
                if not isinstance(obj, dict):
                    report.problem(k, None, "bad_json", f"line {k} is a JSON {type(obj).__name__}, not an object")
                    continue
                yield k, _normalise_columns(obj, report, seen_unknown)
        return
    if suffix not in (".csv", ".tsv", ".txt"):
        raise ValidationError(
            f"The 'manifest' parameter must be a .csv, .tsv or .jsonl file. Got {str(path)!r}."
        )
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames:
            raise ValidationError(f"The manifest {str(path)!r} has no header row; the first row must name the columns.")
        seen_unknown = set()
        for k, row in enumerate(reader, start=1):
            yield k, _normalise_columns(row, report, seen_unknown)


def _normalise_columns(row: dict, report: ImportReport, seen_unknown: set[str]) -> dict:
    out: dict[str, Any] = {"meta": {}}
    for key, value in row.items():
        if key is None:  # a CSV row with more fields than the header
            continue
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
    return _Candidate(
        row=row_no, rel=path, text=text, label=raw.get("label"),
        annotator=raw.get("annotator") or (annotator if raw.get("label") else None),
        group=raw.get("group"), identity=raw.get("identity"), reference_label=raw.get("reference_label"),
        meta=raw.get("meta") or {},
    )


def _resolve(root: Path, rel: str) -> Path | None:
    """The absolute path of ``rel`` under ``root``, or None when it escapes the root."""
    p = Path(rel)
    full = (p if p.is_absolute() else root / p).resolve()
    try:
        full.relative_to(root)
    except ValueError:
        return None
    return full


def _import_candidates(
    store: Store,
    source_id: int,
    root: Path,
    candidates: list[_Candidate],
    report: ImportReport,
    *,
    add_labels: bool,
    progress: Callable[[int, int], None] | None,
    from_folder: bool,
) -> None:
    modality = store.modality
    media_kind = _MEDIA_KIND[modality]
    existing_uris = store.existing_uris(source_id)

    # 1. paths: resolve, check the root and the kind of file
    checked: list[tuple[_Candidate, Path | None]] = []
    for c in candidates:
        if c.rel is None:
            checked.append((c, None))
            continue
        full = _resolve(root, c.rel)
        if full is None:
            report.problem(c.row, c.rel, "escapes_root", f"the path leads outside the media root {root}")
            continue
        c.rel = full.relative_to(root).as_posix()
        kind = media.kind_of(full)
        if kind != media_kind:
            if not (from_folder and kind is None and full.name.lower() in {"readme", "readme.md", "license"}):
                report.problem(c.row, c.rel, "wrong_modality",
                               f"a {kind or 'unknown'} file ({full.suffix or 'no extension'}) in a {modality} project")
            continue
        if not full.is_file():
            report.problem(c.row, c.rel, "missing_file", f"no file at {full}")
            continue
        checked.append((c, full))

    # 2. decode each new file once (in threads: PIL and libsndfile release the GIL)
    def check(entry: tuple[_Candidate, Path | None]) -> tuple[Any, str | None, str | None]:
        c, full = entry
        uri = _uri(c)
        if uri in existing_uris:
            return None, None, uri
        if full is None:
            return None, media.text_hash(c.text or ""), uri
        if media_kind == "text":
            problem, text = media.check_text_file(full)
            if problem is None:
                c.text = text
            return problem, None if problem else media.file_hash(full), uri
        problem = media.check_media(full, media_kind)
        if problem is not None:
            return problem, None, uri
        h = media.file_hash(full)
        if modality == "image+text":
            h = media.text_hash(h + "\0" + (c.text or ""))
        return None, h, uri

    results = []
    total = len(checked)
    every = max(1, min(500, total // 50))  # about 50 progress reports, at least one per 500 files
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        for k, res in enumerate(pool.map(check, checked), start=1):
            results.append(res)
            if progress and (k % every == 0 or k == total):
                progress(k, total)
    finally:  # a progress callback that raises (cancel) must not wait for every remaining file
        pool.shutdown(wait=True, cancel_futures=True)

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
            report.problem(c.row, c.rel, "unknown_label",
                           f"label {bad_label!r} is not in the label set {sorted(label_set)}; "
                           "add it (import --add-labels) or fix the row")
            continue
        if problem is not None:
            report.problem(c.row, c.rel or c.text, *problem)
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
                report.problem(c.row, c.rel or c.text, "duplicate", f"same content as {first}; skipped")
                continue
            seen_hash[h] = (c.row, c.rel or (c.text or "")[:40])
            new_rows[uri] = {
                "source_id": source_id, "uri": uri, "modality": modality, "text": c.text, "group": c.group,
                "identity": c.identity, "meta": c.meta, "reference_label": c.reference_label, "content_hash": h,
            }
        if c.label:
            key = (uri, c.annotator or DEFAULT_ANNOTATOR)
            if key in vote_keys:
                report.problem(c.row, c.rel or c.text, "duplicate",
                               f"a second label by {key[1]!r} for the same item (row {vote_keys[key]}); skipped")
                continue
            vote_keys[key] = c.row
            votes.append((uri, key[1], c.label))

    # 5. write: labels, items, votes -- all or nothing
    with store.transaction() as conn:
        if new_labels:
            report.labels_added = store.add_labels(new_labels)
        ids = store.insert_items(conn, list(new_rows.values()))
        report.added = len(ids)
        by_annotator: dict[str, list[tuple[int, str]]] = {}
        for uri, who, label in votes:
            item_id = store.item_id_for_uri(source_id, uri)
            if item_id is not None:
                by_annotator.setdefault(who, []).append((item_id, label))
        for who, pairs in by_annotator.items():
            report.annotations += len(store.annotate_many(pairs, annotator=who, kind="human", skip_existing=True))
        store.record_import(source_id=source_id, spec=report.spec, added=report.added,
                            already_present=report.already_present, skipped=report.skipped,
                            annotations=report.annotations, report=report.problems)


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
