"""Command line of the engine: ``python -m core COMMAND ...`` (``python -m core --help`` lists them).

Exit codes: 0 success; 1 an error the message explains (bad input, missing project, training failed);
2 bad usage; 3 an import or annotate run that skipped rows while ``--strict`` was given; 4 a training job is
already running for the project.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from core.labels import engine as consensus_engine
from core.errors import LabelToolError, ValidationError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_BUSY = 0, 1, 2, 3, 4


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, default=str))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            print(f"{k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    else:
        print(obj)


def cmd_init(a) -> int:
    from core.io.ingest import parse_labels
    from core.store.project_store import Store

    store = Store.create(a.project, modality=a.modality, name=a.name, labels=parse_labels(a.labels or ""),
                         min_votes=a.min_votes, extractor=a.extractor)
    _print({"project": str(store.dir), **store.settings(), "labels": store.labels()}, a.json)
    return EXIT_OK


def cmd_import(a) -> int:
    from core.io.ingest import import_source
    from core.store.project_store import Store

    store = Store(a.project)
    mode = "reference" if a.reference_from_folders else "initial" if a.labels_from_folders else None
    report = import_source(store, a.source, manifest=True if a.manifest else None, labels_from_folders=mode,
                           media_root=a.media_root, annotator=a.annotator, add_labels=a.add_labels,
                           group_pattern=a.group_pattern)
    d = report.as_dict()
    if a.json:
        print(json.dumps(d))
    else:
        print(f"imported {d['added']} items from {d['source']} ({d['already_present']} already present, "
              f"{d['skipped']} rows skipped, {d['annotations']} labels recorded)")
        if d["labels_added"]:
            print(f"labels added: {', '.join(d['labels_added'])}")
        for p in d["problems"]:
            where = "header" if p["row"] == 0 else f"row {p['row']}"
            print(f"  {where}: {p['path'] or ''}: {p['problem']}: {p['detail']}", file=sys.stderr)
    return EXIT_PARTIAL if a.strict and d["skipped"] else EXIT_OK


def cmd_features(a) -> int:
    from core.device import resolve_device
    from core.store.project_store import Store
    from core.models.training import ensure_features

    store = Store(a.project)
    last = {"n": -1}

    def progress(info):
        if not a.json and info.get("total") and info["step"] != last["n"]:
            last["n"] = info["step"]
            print(f"\r{info['phase']}: {info['step']}/{info['total']}", end="", file=sys.stderr, flush=True)

    import time

    t0 = time.perf_counter()
    fm = ensure_features(store, extractor=a.extractor, device=resolve_device(a.device), progress=progress)
    if not a.json:
        print(file=sys.stderr)
    _print({"extractors": fm.extractors, "items": int(len(fm.ids)), "dim": int(fm.X.shape[1]),
            "failures": fm.failures, "seconds": round(time.perf_counter() - t0, 2)}, a.json)
    return EXIT_OK


def cmd_annotate(a) -> int:
    from core.store.project_store import Store

    store = Store(a.project)
    path = Path(a.csv)
    if not path.is_file():
        raise ValidationError(f"The 'CSV' argument must be an existing CSV file. Got {str(path)!r}.")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    problems, by_annotator = [], {}
    labels = set(store.labels())
    keys = {"path", "item", "item_id", "annotator", "label"}
    unknown = set(rows[0].keys()) - keys if rows else set()
    if unknown:
        problems.append({"row": 0, "problem": "unknown_column",
                         "detail": f"unknown columns {sorted(unknown)} ignored; expected path (or item_id), annotator, label"})
    paths = [r.get("path") or r.get("item") for r in rows if not r.get("item_id")]
    found = store.find_items_by_path([p for p in paths if p])
    valid_ids = set(store.item_ids().tolist())
    for k, r in enumerate(rows, start=1):
        who, label = (r.get("annotator") or a.annotator or "").strip(), (r.get("label") or "").strip()
        if r.get("item_id"):
            try:
                item_id = int(r["item_id"])
            except ValueError:
                item_id = None
            item_id = item_id if item_id in valid_ids else None
        else:
            item_id = found.get(r.get("path") or r.get("item") or "")
        if item_id is None:
            problems.append({"row": k, "problem": "unknown_item", "detail": f"no item {r.get('path') or r.get('item_id')!r}"})
        elif not who:
            problems.append({"row": k, "problem": "missing_annotator", "detail": "no annotator on this row (or --annotator)"})
        elif label not in labels:
            problems.append({"row": k, "problem": "unknown_label",
                             "detail": f"label {label!r} is not in the label set {sorted(labels)}"})
        else:
            by_annotator.setdefault(who, []).append((item_id, label))
    n = 0
    for who, pairs in by_annotator.items():
        n += len(store.annotate_many(pairs, annotator=who, kind=a.kind, skip_existing=True))
    ov = store.overview()
    out = {"annotations": n, "skipped": len([p for p in problems if p["row"]]), "problems": problems,
           "confirmed_items": ov["confirmed_items"]}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"recorded {n} labels; {out['skipped']} rows skipped; {ov['confirmed_items']} items confirmed")
        for p in problems:
            print(f"  row {p['row']}: {p['problem']}: {p['detail']}", file=sys.stderr)
    return EXIT_PARTIAL if a.strict and out["skipped"] else EXIT_OK


def _parse_params(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ValidationError(f"The '--param' option must look like name=value. Got {p!r}.")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def cmd_train(a) -> int:
    from core.jobs import queue as jobs
    from core.store.project_store import Store
    from core.jobs.worker import run_job

    store = Store(a.project)
    params = {"model": a.model, "params": _parse_params(a.param), "device": a.device, "extractor": a.extractor}
    job_id, coalesced = jobs.request_job(store, "train", params, requested_by="cli")
    if a.queue:
        _print({"job": job_id, "queued": True, "coalesced": coalesced}, a.json)
        return EXIT_OK
    job = jobs.claim_next(store, job_id=job_id)
    if job is None:
        running = jobs.active_job(store)
        raise_busy = running is not None and running["status"] == "running"
        msg = (f"a training job is already running for this project (job {running['id']}); your request is queued "
               f"as job {job_id} for the worker" if raise_busy else f"job {job_id} could not be claimed")
        print(msg, file=sys.stderr)
        return EXIT_BUSY

    status = run_job(store, job)
    job = jobs.get_job(store, job_id)
    if status != "done":
        print(f"training {status}: {job['message']}", file=sys.stderr)
        return EXIT_ERROR
    run = store.run(job["run_id"])
    out = {"run": run["id"], "model": run["model"], "device": run["device"], "n_labelled": run["n_labelled"],
           "n_items": run["n_items"], "train_seconds": run["train_seconds"],
           **{k: run["metrics"].get(k) for k in ("model_selected", "params_selected", "cv_macro_f1")},
           "evaluation": run["metrics"].get("evaluation")}
    _print(out, a.json)
    return EXIT_OK


def cmd_evaluate(a) -> int:
    from core.evaluation.runs import evaluate_run
    from core.store.project_store import Store

    _print(evaluate_run(Store(a.project), a.run), a.json)
    return EXIT_OK


def cmd_export(a) -> int:
    from core.io.export import export_items
    from core.store.project_store import Store

    n = export_items(Store(a.project), a.out, fmt=a.format, run_id=a.run, include_reference=a.include_reference)
    _print({"exported": n, "out": str(a.out), "format": a.format}, a.json)
    return EXIT_OK


def cmd_status(a) -> int:
    from core.jobs import queue as jobs
    from core.store.project_store import Store

    store = Store(a.project)
    out = store.overview()
    out["jobs"] = [{k: j[k] for k in ("id", "kind", "status", "progress", "message")} for j in jobs.list_jobs(store, limit=5)]
    _print(out, a.json)
    return EXIT_OK


def cmd_consensus(a) -> int:
    from core.store.project_store import Store

    store = Store(a.project)
    if a.min_votes is not None:
        store.set_setting("min_votes", a.min_votes)
    if a.min_confidence is not None:
        store.set_setting("min_confidence", a.min_confidence)
    if a.weight_by_confidence is not None:
        store.set_setting("weight_by_confidence", a.weight_by_confidence == "on")
    out = consensus_engine.refit(store, a.method)
    _print(out, a.json)
    return EXIT_OK


def cmd_settings(a) -> int:
    from core.jobs import auto_retrain
    from core.store.project_store import Store

    store = Store(a.project)
    if a.auto_retrain is not None:
        store.set_setting("auto_retrain", a.auto_retrain == "on")
    if a.every is not None:
        store.set_setting("auto_retrain_every", a.every)
    _print({**auto_retrain.DEFAULTS, **store.settings()}, a.json)
    return EXIT_OK


def cmd_query(a) -> int:
    from core.active.queue import next_items
    from core.store.project_store import Store

    store = Store(a.project)
    picks = next_items(store, strategy=a.strategy, n=a.n, annotator=a.annotator)
    _print({"strategy": a.strategy, "items": picks}, a.json)
    return EXIT_OK


def cmd_cancel(a) -> int:
    from core.jobs import queue as jobs
    from core.store.project_store import Store

    _print({"job": a.job, "status": jobs.request_cancel(Store(a.project), a.job)}, a.json)
    return EXIT_OK


def cmd_worker(a) -> int:
    from core.jobs.worker import main

    return main(a.path)


def cmd_demo(a) -> int:
    from core.io.demo import create_demo

    store, created = create_demo(a.project)
    _print({"project": str(store.dir), "created": created, "items": store.item_count()}, a.json)
    return EXIT_OK


def cmd_extractors(a) -> int:
    from core.features import list_extractors

    _print(list_extractors() if a.json else "\n".join(f"{e['name']:20s} {e['modality']:6s} {e.get('description', '')}"
                                                      for e in list_extractors()), a.json)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="Labelling and active-learning engine.")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        sp.add_argument("--json", action="store_true", help="print one JSON object")
        return sp

    sp = cmd("init", cmd_init, "create a project folder")
    sp.add_argument("project")
    sp.add_argument("--modality", required=True, choices=["image", "audio", "text", "image+text"])
    sp.add_argument("--labels", help="comma-separated label set (else taken from the first import)")
    sp.add_argument("--min-votes", type=int, default=2, help="agreeing votes that confirm an item (1 for one annotator)")
    sp.add_argument("--extractor", help="feature extractor (default by modality; see 'extractors')")
    sp.add_argument("--name")

    sp = cmd("import", cmd_import, "import a folder of media or a CSV/JSONL manifest")
    sp.add_argument("project")
    sp.add_argument("source")
    sp.add_argument("--manifest", action="store_true", help="SOURCE is a CSV/TSV/JSONL manifest")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--reference-from-folders", action="store_true", help="class sub-folders become reference labels")
    g.add_argument("--labels-from-folders", action="store_true", help="class sub-folders become initial labels")
    sp.add_argument("--annotator", default="import", help="who the imported labels are recorded under")
    sp.add_argument("--media-root", help="media root of a manifest's paths (default: the manifest's folder)")
    sp.add_argument("--add-labels", action="store_true", help="add unknown labels to the label set")
    sp.add_argument("--strict", action="store_true", help="exit 3 when any row was skipped")
    sp.add_argument("--group-pattern", help="folders: a regex whose first group in each file name is the item's "
                    "group (camera, speaker), e.g. '^(\\d+)_' for reid_col780's 01_3.png")

    sp = cmd("features", cmd_features, "compute the features the project lacks")
    sp.add_argument("project")
    sp.add_argument("--extractor")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    sp = cmd("annotate", cmd_annotate, "record labels from a CSV (columns: path or item_id, annotator, label)")
    sp.add_argument("project")
    sp.add_argument("csv")
    sp.add_argument("--annotator", help="annotator for rows without one")
    sp.add_argument("--kind", default="human", choices=["human", "bulk", "adjudication"])
    sp.add_argument("--strict", action="store_true", help="exit 3 when any row was skipped")

    sp = cmd("train", cmd_train, "train a model on the confirmed labels and publish a run")
    sp.add_argument("project")
    sp.add_argument("--model", default="classifier")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--extractor")
    sp.add_argument("--param", action="append", help="model parameter name=value (JSON values), repeatable")
    sp.add_argument("--queue", action="store_true", help="only queue the job for the worker")

    sp = cmd("evaluate", cmd_evaluate, "score a run against the reference labels")
    sp.add_argument("project")
    sp.add_argument("--run", type=int)

    sp = cmd("export", cmd_export, "export items with consensus and predictions")
    sp.add_argument("project")
    sp.add_argument("--format", required=True, choices=["csv", "jsonl"])
    sp.add_argument("--out", required=True)
    sp.add_argument("--run", type=int)
    sp.add_argument("--include-reference", action="store_true")

    sp = cmd("status", cmd_status, "project overview and recent jobs")
    sp.add_argument("project")

    sp = cmd("consensus", cmd_consensus, "choose the consensus method and refit it on all votes")
    sp.add_argument("project")
    sp.add_argument("--method", choices=["majority", "dawid_skene", "model_aware"],
                    help="the method from now on (default: the project's current one)")
    sp.add_argument("--min-votes", type=int, help="majority vote: agreeing votes that confirm an item")
    sp.add_argument("--min-confidence", type=float, help="Dawid-Skene / model-aware: posterior that confirms an item")
    sp.add_argument("--weight-by-confidence", choices=["on", "off"],
                    help="training weighs each confirmed item by its consensus confidence")

    sp = cmd("settings", cmd_settings, "show the project's settings; set automatic light retraining")
    sp.add_argument("project")
    sp.add_argument("--auto-retrain", choices=["on", "off"],
                    help="the worker queues a light retrain after every N newly confirmed labels")
    sp.add_argument("--every", type=int, help="N, the newly confirmed labels between automatic retrains")

    sp = cmd("query", cmd_query, "the next items to label by a query strategy")
    sp.add_argument("project")
    sp.add_argument("--strategy", default="least_confidence")
    sp.add_argument("--n", type=int, default=10)
    sp.add_argument("--annotator")

    sp = cmd("cancel", cmd_cancel, "cancel a queued or running job")
    sp.add_argument("project")
    sp.add_argument("job", type=int)

    sp = cmd("worker", cmd_worker, "run jobs of a project, or of every project in a folder")
    sp.add_argument("path", nargs="?", default="projects")

    sp = cmd("demo", cmd_demo, "create the demo project (MNIST digits) if absent")
    sp.add_argument("project", nargs="?", default="projects/demo")

    cmd("extractors", cmd_extractors, "list the feature extractors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabelToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
