"""Command line of the engine: ``python -m core COMMAND ...`` (``python -m core --help`` lists them).

Exit codes: 0 success; 1 an error the message explains (bad input, missing project, training failed);
2 bad usage; 3 an import or annotate run that skipped rows while ``--strict`` was given; 4 a training job is
already running for the project.
"""
from __future__ import annotations

import argparse
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


def _open(a):
    """The store of ``a.project`` as the CLI opens it: writes are not role-checked (the shell user owns the
    files) and are recorded under ``--user`` or the OS user."""
    from core.store.project_store import Store

    store = Store(a.project, origin="cli")
    store.default_actor = getattr(a, "user", None)
    return store


def cmd_init(a) -> int:
    from core.io.ingest import parse_labels
    from core.store.project_store import Store

    store = Store.create(a.project, modality=a.modality, name=a.name, labels=parse_labels(a.labels or ""),
                         min_votes=a.min_votes, extractor=a.extractor, origin="cli", by=a.user)
    _print({"project": str(store.dir), **store.settings(), "labels": store.labels()}, a.json)
    return EXIT_OK


def cmd_import(a) -> int:
    from core.io.ingest import import_source
    from core.store.project_store import Store

    store = _open(a)
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

    store = _open(a)
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
    from core.io.annotations_csv import import_annotations

    store = _open(a)
    out = import_annotations(store, a.csv, annotator=a.annotator, kind=a.kind)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"recorded {out['annotations']} labels; {out['skipped']} rows skipped; "
              f"{out['confirmed_items']} items confirmed")
        for p in out["problems"]:
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

    from core.models.registry import get_trainer

    store = _open(a)
    params = {"model": a.model, "params": _parse_params(a.param), "device": a.device, "extractor": a.extractor}
    get_trainer(a.model).check_params(params["params"])  # a misspelled --param is refused before any work
    if a.no_map:
        params["project_map"] = False
    for stale in jobs.recover_stale(store):  # a killed 'core train' or worker: no worker needs to be up for this
        print(f"job {stale} was left running by a process that is gone: marked failed", file=sys.stderr)
    job_id, coalesced = jobs.request_job(store, "train", params, requested_by=store.actor(None))
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

    status = run_job(store, job, echo=None if a.json or a.quiet else _ProgressLine())
    if not (a.json or a.quiet):
        print(file=sys.stderr)
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


class _ProgressLine:
    """Prints a training job's progress on one terminal line (stderr), as the Train page shows it: the phase,
    step / total and the ETA, rewritten in place: at once when the phase changes, at most every half second
    within one."""

    def __init__(self) -> None:
        self.last, self.phase = 0.0, None

    def __call__(self, info: dict) -> None:
        import time

        t = time.monotonic()
        if t - self.last < 0.5 and info.get("phase") == self.phase:
            return
        self.last, self.phase = t, info.get("phase")
        step, total = info.get("step"), info.get("total")
        text = str(info.get("phase") or "working")
        if step is not None and total:
            text += f" {step}/{total}"
        if info.get("eta_s"):
            text += f", ETA {info['eta_s']:.0f} s"
        print(f"\r{text[:100]:100s}", end="", file=sys.stderr, flush=True)


def cmd_evaluate(a) -> int:
    from core.evaluation.runs import LABEL_FREE_NOTE, evaluate_run

    out = evaluate_run(_open(a), a.run)
    if out["label_free"] and not a.json:
        print(LABEL_FREE_NOTE)
    _print(out, a.json)
    return EXIT_OK


def cmd_export(a) -> int:
    from core.io.export import export_items
    from core.store.project_store import Store

    n = export_items(_open(a), a.out, fmt=a.format, run_id=a.run, include_reference=a.include_reference)
    _print({"exported": n, "out": str(a.out), "format": a.format}, a.json)
    return EXIT_OK


def cmd_status(a) -> int:
    from core.jobs import queue as jobs
    from core.store.project_store import Store

    store = _open(a)
    out = store.overview()
    out["jobs"] = [{k: j[k] for k in ("id", "kind", "status", "progress", "message")} for j in jobs.list_jobs(store, limit=5)]
    _print(out, a.json)
    return EXIT_OK


def cmd_consensus(a) -> int:
    from core.store.project_store import Store

    store = _open(a)
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

    store = _open(a)
    if a.auto_retrain is not None:
        store.set_setting("auto_retrain", a.auto_retrain == "on")
    if a.every is not None:
        store.set_setting("auto_retrain_every", a.every)
    _print({**auto_retrain.DEFAULTS, **store.settings()}, a.json)
    return EXIT_OK


def cmd_query(a) -> int:
    from core.active.queue import next_items
    from core.store.project_store import Store

    store = _open(a)
    picks = next_items(store, strategy=a.strategy, n=a.n, annotator=a.annotator)
    _print({"strategy": a.strategy, "items": picks}, a.json)
    return EXIT_OK


def cmd_cancel(a) -> int:
    from core.jobs import queue as jobs
    from core.store.project_store import Store

    _print({"job": a.job, "status": jobs.request_cancel(_open(a), a.job)}, a.json)
    return EXIT_OK


def cmd_backup(a) -> int:
    from core.store.backup import backup_project

    out = backup_project(a.project, a.out)
    store = _open(a)
    with store.transaction() as conn:  # the backup itself writes nothing to the project; the log says it was taken
        store.audit(conn, store.actor(None), "backup", out=str(out.get("path")), bytes=out.get("bytes"))
    _print(out, a.json)
    return EXIT_OK


def cmd_restore(a) -> int:
    from core.store.backup import restore_project

    out = restore_project(a.backup, a.project, force=a.force)
    store = _open(a)
    with store.transaction() as conn:
        store.audit(conn, store.actor(None), "restore", backup=str(Path(a.backup).resolve()),
                    replaced=out.get("replaced"))
    _print(out, a.json)
    return EXIT_OK


def cmd_worker(a) -> int:
    from core.jobs.worker import main

    return main(a.path)


def cmd_demo(a) -> int:
    from core.auth.setup import ACCOUNTS_FILE, create_demo_accounts
    from core.io.demo import create_demo

    store, created = create_demo(a.project)
    store = _open(a)
    out = Path(a.accounts_file) if a.accounts_file else store.dir.parent / ACCOUNTS_FILE
    made = None if a.no_accounts else create_demo_accounts(store, out)
    _print({"project": str(store.dir), "created": created, "items": store.item_count(),
            "accounts": "created" if made else ("none" if a.no_accounts else "kept")}, a.json)
    if made and not a.json:  # printed once; the file keeps them for the newcomer (mode 0600, never committed)
        print(f"\nDemo accounts (also in {out}, readable only by you):")
        for name, password in made.items():
            print(f"  {name:12s} {store.role_of(name):10s} password: {password}")
        print()
    elif not a.no_accounts and not a.json:
        print(f"sign in with the demo accounts in {out}" if out.is_file() else
              "the demo project has accounts; an admin adds more with 'python -m core users add'")
    return EXIT_OK


def cmd_users(a) -> int:
    from core.cli_users import cmd_users as run

    _print(run(a, _open(a)), a.json)
    return EXIT_OK


def cmd_serve_check(a) -> int:
    from core.auth.setup import serving_problem
    from core.jobs.worker import scan_projects
    from core.store.project_store import Store

    healthy, broken = scan_projects(Path(a.path))
    for path, why in broken:
        print(f"warning: the project {path} cannot be opened and is not served: {why}", file=sys.stderr)
    problem = serving_problem([Store(p, origin="cli") for p in healthy], a.host)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_ERROR
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
        sp.add_argument("--user", help="who this command's writes are recorded under in the audit log "
                        "(default: the OS user)")
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

    from core.models.registry import MODELS

    sp = cmd("train", cmd_train, "train a model on the confirmed labels and publish a run")
    sp.add_argument("project")
    sp.add_argument("--model", default="classifier", metavar="{" + ",".join(MODELS) + "}",
                    help="the model family (default classifier): "
                    + "; ".join(f"{m}: {f.description}" for m, f in MODELS.items()))
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--extractor")
    sp.add_argument("--param", action="append", help="model parameter name=value (JSON values), repeatable")
    sp.add_argument("--queue", action="store_true", help="only queue the job for the worker")
    sp.add_argument("--no-map", action="store_true", help="skip the embedding map (UMAP) step: the run has no "
                    "map on the Embeddings page (a later run without --no-map makes one)")
    sp.add_argument("--quiet", action="store_true", help="print no progress while training")

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

    sp = cmd("backup", cmd_backup, "copy a project to a new folder while annotators keep working "
             "(SQLite online backup, then its files; integrity-checked)")
    sp.add_argument("project")
    sp.add_argument("out", help="a new or empty folder outside the project")

    sp = cmd("restore", cmd_restore, "make a backup folder a project again (checked before anything is replaced)")
    sp.add_argument("backup")
    sp.add_argument("project", help="a new or empty folder, or with --force an existing project")
    sp.add_argument("--force", action="store_true", help="replace an existing project; it is moved aside to "
                    "PROJECT.replaced-<timestamp> (stop the app and the worker serving it first)")

    sp = cmd("worker", cmd_worker, "run jobs of a project, or of every project in a folder")
    sp.add_argument("path", nargs="?", default="projects")

    sp = cmd("demo", cmd_demo, "create the demo project (MNIST digits) and its demo accounts if absent")
    sp.add_argument("project", nargs="?", default="projects/demo")
    sp.add_argument("--accounts-file", help="where the demo accounts' passwords go (default: "
                    "<projects>/demo-accounts.txt, mode 0600)")
    sp.add_argument("--no-accounts", action="store_true", help="create no accounts")

    cmd("extractors", cmd_extractors, "list the feature extractors")

    from core.cli_users import add_parser as add_users_parser

    add_users_parser(sub, lambda name, _f, help_: cmd(name, cmd_users, help_))
    sp = cmd("serve-check", cmd_serve_check, "exit 1 with the reason when the app must not serve HOST "
             "(beyond localhost every project needs an admin account)")
    sp.add_argument("path", nargs="?", default="projects")
    sp.add_argument("--host", default="localhost")
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
