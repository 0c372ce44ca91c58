"""Our consensus methods against cleanlab's CROWDLAB and crowd-kit's Dawid-Skene, GLAD and MACE, same inputs.

Every method sees the same simulated crowd (:mod:`bench.crowd_sim`: known truth, known annotator
accuracies); the model-aware ones (ours and CROWDLAB) also get the same out-of-fold model probabilities.
Three figures per method: accuracy of the consensus against the truth; the annotator-quality estimate
against the annotators' true accuracy (Spearman rank correlation, and the mean absolute error of an
accuracy estimate where the method gives one); and wall time of the fit. A speed row times the
Dawid-Skene fits at 100k items x 10 annotators. Rows go to bench/results/crowd.jsonl and crowd_speed.jsonl.

The bench-only dependencies are in bench/requirements-bench.txt (cleanlab, crowd-kit).

    .venv/bin/python bench/bench_crowd.py [--seeds 5] [--items 2000] [--speed-items 100000] [--crowds hard,easy]
    .venv/bin/python bench/bench_crowd.py --table     # the markdown tables of docs/consensus.md from the rows
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record  # noqa: E402
from bench.crowd_sim import CrowdSpec, majority_labels, out_of_fold_proba, simulate_crowd  # noqa: E402
from core.labels.methods import dawid_skene_fit, majority_vote, model_aware  # noqa: E402

CROWDS = {
    # the defect's hard crowd: 20 annotators, 2 votes per item, 2 adversaries, 3 spammers, one class at 40%
    "hard": CrowdSpec(n_items=2000, n_classes=4, n_good=15, n_adversaries=2, n_spammers=3, votes_per_item=2,
                      major_class_share=0.4),
    # class-dependent confusion: most annotators mix up class pairs (0<->1, 2<->3) 35% of the time
    "confusers": CrowdSpec(n_items=2000, n_classes=4, n_good=4, n_adversaries=1, n_spammers=1, n_confusers=8,
                           votes_per_item=3, major_class_share=0.4),
    # a friendlier one: 10 annotators, 3 votes per item, one spammer
    "easy": CrowdSpec(n_items=2000, n_classes=4, n_good=9, n_adversaries=0, n_spammers=1, votes_per_item=3,
                      major_class_share=0.4, good_accuracy=(0.6, 0.9)),
}


def _long(L: np.ndarray):
    """The label matrix as crowd-kit's long table (task, worker, label)."""
    import pandas as pd

    rows, cols = np.nonzero(~np.isnan(L))
    return pd.DataFrame({"task": rows, "worker": cols, "label": L[rows, cols].astype(int)})


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return round(float(spearmanr(a[ok], b[ok]).statistic), 4)


def _labels_from(series, N: int) -> np.ndarray:
    out = np.full(N, -1)
    out[series.index.to_numpy(dtype=int)] = series.to_numpy(dtype=int)
    return out


def run_ours_ds(L, K, proba):
    table, fit = dawid_skene_fit(L, n_classes=K)
    return table.label, fit.annotator_accuracy, fit.annotator_accuracy, {"n_iter": fit.n_iter}


def run_ours_model_aware(L, K, proba):
    table, w = model_aware(L, proba, n_classes=K)
    return table.label, w["annotator_accuracy"], w["annotator_accuracy"], {"n_iter": w["n_iter"],
                                                                         "model_weight": round(w["model"], 4)}


def run_majority(L, K, proba):
    t = majority_vote(L, n_classes=K)
    return t.label, None, None, {}


def run_crowdlab(L, K, proba):
    from cleanlab.multiannotator import get_label_quality_multiannotator

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        out = get_label_quality_multiannotator(L, proba, verbose=False)
    stats = out["annotator_stats"].sort_index()
    quality = stats["annotator_quality"].to_numpy(dtype=float)
    agree = stats["agreement_with_consensus"].to_numpy(dtype=float)
    return out["label_quality"]["consensus_label"].to_numpy(dtype=int), quality, agree, {}


def run_crowdkit(name: str):
    def run(L, K, proba):
        import pandas as pd
        from crowdkit.aggregation import GLAD, MACE, DawidSkene

        df = _long(L)
        M = L.shape[1]
        if name == "DawidSkene":
            m = DawidSkene(n_iter=100)
            labels = _labels_from(m.fit_predict(df), len(L))
            err = m.errors_  # index (worker, observed label), columns true label: P(observed | true)
            prior = m.priors_.reindex(range(K)).fillna(0).to_numpy()
            acc = np.full(M, np.nan)
            for w in range(M):
                e = err.loc[w].reindex(index=range(K), columns=range(K)).fillna(0).to_numpy()
                acc[w] = float(np.diag(e) @ prior)
            return labels, acc, acc, {"n_iter": len(m.loss_history_)}
        if name == "GLAD":
            m = GLAD(n_iter=100, silent=True)
            labels = _labels_from(m.fit_predict(df), len(L))
            alpha = m.alphas_.reindex(range(M)).to_numpy(dtype=float)
            return labels, alpha, None, {"n_iter": len(m.loss_history_)}
        m = MACE(n_restarts=10, n_iter=50, random_state=0)
        labels = _labels_from(m.fit_predict(df), len(L))
        _, names = pd.factorize(df["worker"])
        competence = np.full(M, np.nan)
        competence[np.asarray(names, dtype=int)] = m.spamming_[:, 1]
        return labels, competence, None, {}
    return run


METHODS = {
    "majority": run_majority,
    "ours_dawid_skene": run_ours_ds,
    "ours_model_aware": run_ours_model_aware,
    "cleanlab_crowdlab": run_crowdlab,
    "crowdkit_dawid_skene": run_crowdkit("DawidSkene"),
    "crowdkit_glad": run_crowdkit("GLAD"),
    "crowdkit_mace": run_crowdkit("MACE"),
}


def compare(crowd_name: str, spec: CrowdSpec, seed: int, methods: list[str]) -> dict:
    crowd = simulate_crowd(spec, seed)
    K = spec.n_classes
    proba = out_of_fold_proba(crowd.X, majority_labels(crowd.L, K, seed), K, seed)
    res = {}
    for name in methods:
        t0 = time.perf_counter()
        labels, quality, acc_est, extra = METHODS[name](crowd.L, K, proba)
        seconds = time.perf_counter() - t0
        row = {"accuracy": round(float((labels == crowd.truth).mean()), 4), "seconds": round(seconds, 3), **extra}
        if quality is not None:
            row["quality_spearman"] = _spearman(np.asarray(quality, dtype=float), crowd.accuracy)
        if acc_est is not None:
            row["accuracy_estimate_mae"] = round(float(np.nanmean(np.abs(np.asarray(acc_est) - crowd.accuracy))), 4)
        res[name] = row
    return {"crowd": crowd_name, "seed": seed, "spec": {k: v for k, v in spec.__dict__.items()},
            "model_alone_accuracy": round(float((proba.argmax(1) == crowd.truth).mean()), 4), "methods": res}


def speed(n_items: int, seed: int = 0) -> dict:
    """Dawid-Skene fits at ``n_items`` x 10 annotators (3 votes per item, K = 10): ours against crowd-kit."""
    from crowdkit.aggregation import DawidSkene

    spec = CrowdSpec(n_items=n_items, n_classes=10, n_good=8, n_adversaries=1, n_spammers=1, votes_per_item=3,
                     major_class_share=0.1, n_features=2)
    crowd = simulate_crowd(spec, seed)
    out = {}
    t0 = time.perf_counter()
    table, fit = dawid_skene_fit(crowd.L, n_classes=10)
    out["ours_dawid_skene"] = {"seconds": round(time.perf_counter() - t0, 3), "n_iter": fit.n_iter,
                               "accuracy": round(float((table.label == crowd.truth).mean()), 4)}
    df = _long(crowd.L)
    t0 = time.perf_counter()
    m = DawidSkene(n_iter=100)
    labels = _labels_from(m.fit_predict(df), len(crowd.L))
    out["crowdkit_dawid_skene"] = {"seconds": round(time.perf_counter() - t0, 3), "n_iter": len(m.loss_history_),
                                   "accuracy": round(float((labels == crowd.truth).mean()), 4)}
    return {"n_items": n_items, "n_annotators": 10, "votes_per_item": 3, "n_classes": 10, "methods": out}


def table(results: Path) -> str:
    """The markdown tables of docs/consensus.md from the newest run of each (crowd, seed) in ``results``."""
    import json

    rows = {}
    for line in (results / "crowd.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[(r["crowd"], r["seed"])] = r  # later rows replace earlier ones
    out = []
    for crowd in dict.fromkeys(c for c, _ in rows):
        runs = [r for (c, _), r in sorted(rows.items()) if c == crowd]
        spec = runs[0]["spec"]
        model = [r["model_alone_accuracy"] for r in runs]
        out.append(f"\n**{crowd}** ({spec['n_items']} items, {spec['n_classes']} classes, "
                   f"{spec['n_good']} good, {spec['n_adversaries']} adversaries, {spec['n_spammers']} spammers, "
                   f"{spec.get('n_confusers', 0)} confusers, {spec['votes_per_item']} votes per item; "
                   f"{len(runs)} seeds, {runs[0]['date'][:10]}; model alone {min(model):.3f}-{max(model):.3f})\n")
        out.append("| method | accuracy (mean, min-max) | annotator quality: Spearman | accuracy estimate: MAE | seconds |")
        out.append("|---|---|---|---|---|")
        for name in runs[0]["methods"]:
            acc = [r["methods"][name]["accuracy"] for r in runs]
            sp = [r["methods"][name].get("quality_spearman") for r in runs]
            mae = [r["methods"][name].get("accuracy_estimate_mae") for r in runs]
            sec = [r["methods"][name]["seconds"] for r in runs]
            f = lambda v: "-" if None in v else f"{np.mean(v):.3f}"  # noqa: E731
            out.append(f"| {name} | {np.mean(acc):.4f} ({min(acc):.4f}-{max(acc):.4f}) | {f(sp)} | {f(mae)} | "
                       f"{np.mean(sec):.2f} |")
        if "ours_model_aware" in runs[0]["methods"] and "cleanlab_crowdlab" in runs[0]["methods"]:
            ahead = sum(r["methods"]["ours_model_aware"]["accuracy"] > r["methods"]["cleanlab_crowdlab"]["accuracy"]
                        for r in runs)
            out.append(f"\nours_model_aware more accurate than CROWDLAB on {ahead} of {len(runs)} seeds.")
    speed_file = results / "crowd_speed.jsonl"
    if speed_file.exists():
        r = json.loads(speed_file.read_text().splitlines()[-1])
        out.append(f"\n**speed** ({r['n_items']:,} items x {r['n_annotators']} annotators, {r['votes_per_item']} "
                   f"votes per item, {r['n_classes']} classes, {r['date'][:10]})\n")
        out.append("| Dawid-Skene | seconds | EM iterations | accuracy |")
        out.append("|---|---|---|---|")
        for name, m in r["methods"].items():
            out.append(f"| {name} | {m['seconds']:.2f} | {m['n_iter']} | {m['accuracy']:.4f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", action="store_true", help="print the docs tables from bench/results and exit")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--crowds", default="hard,easy")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--speed-items", type=int, default=100_000, help="0 skips the speed row")
    a = ap.parse_args()
    if a.table:
        import os

        print(table(Path(os.environ.get("BENCH_OUT", Path(__file__).resolve().parent / "results"))))
        return 0
    methods = a.methods.split(",")
    for crowd_name in a.crowds.split(","):
        spec = CROWDS[crowd_name]
        spec = CrowdSpec(**{**spec.__dict__, "n_items": a.items})
        for seed in range(a.seeds):
            record("crowd", compare(crowd_name, spec, seed, methods))
    if a.speed_items:
        record("crowd_speed", speed(a.speed_items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
