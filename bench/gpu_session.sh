#!/usr/bin/env bash
# Device-machine session: GPU checks and figures for the engine. Run on the device from the repo root with
# .gpu carried (.gpu/whl: wheels the device lacks; .gpu/datasets/cifar10_half: a copy of the shared images).
#   bash bench/gpu_session.sh [STEP ...]    steps: tests features cifar retrain spectrogram pseudo_speed
#                                           pseudo_fsdd pseudo_cifar dec_speed dec_quality reid_speed
#                                           (default: the first four)
# Results go to $OUT (the device tool brings them back) as JSON lines / JSON files.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD LABELTOOL_SHARED=$PWD/.gpu BENCH_OUT=$OUT PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
steps=${*:-tests features cifar retrain}
export LABELTOOL_SHARED=$PWD/.gpu
has() { [[ " $steps " == *" $1 "* ]]; }
t() { local s=$(date +%s%N); "$@"; local rc=$?; echo "   ($(( ($(date +%s%N) - s) / 1000000 )) ms, exit $rc)" >&2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if has tests; then echo "== GPU tests"; python3 -m pytest -q -m gpu -p no:cacheprovider --ignore tests/test_app.py tests 2>&1 | tail -5; fi
if has features; then echo "== feature extraction"; python3 bench/bench_features.py --n 5000 --extractors efficientnet_lite0 --devices cuda,cpu; fi
P=/tmp/cifar; D=$PWD/.gpu/datasets/cifar10_half
if has cifar || has retrain; then
  echo "== CIFAR-10 flow from the CLI on CUDA"
  t python3 -m core init $P --modality image --min-votes 1 --json
  t python3 -m core import $P $D --reference-from-folders --json > $OUT/cifar_import.json
  t python3 -m core features $P --extractor efficientnet_lite0 --device cuda --json > $OUT/cifar_features.json
  python3 bench/make_label_csv.py $P --fraction 0.1 --annotator alice > /tmp/labels.csv
  t python3 -m core annotate $P /tmp/labels.csv --json
fi
if has cifar; then
  t python3 -m core train $P --model classifier --device cuda --json > $OUT/cifar_train.json; cat $OUT/cifar_train.json
  t python3 -m core evaluate $P --json > $OUT/cifar_evaluate.json
  python3 -c "import json,sys; sys.path.insert(0,'.'); from core.store import Store; r=Store('$P').run(); print('phases', r['metrics']['phase_seconds'])"
fi
if has retrain; then
  echo "== classifier retrain on CUDA"
  python3 bench/bench_retrain.py --sizes 10000,100000 --device cuda --project $P
fi
if has spectrogram; then echo "== spectrograms: torchaudio on CUDA vs librosa on CPU"; t python3 bench/bench_spectrogram.py --device cuda --out $OUT; fi
if has pseudo_speed; then echo "== fine-tuning throughput"; t python3 bench/bench_pseudo_label.py --device cuda --part speed --speed-sizes 96 128 224 --out $OUT; fi
if has pseudo_fsdd; then echo "== pseudo-labelling, FSDD speaker-independent"; t python3 bench/bench_pseudo_label.py --device cuda --part fsdd --budget-s ${FSDD_BUDGET:-300} ${FSDD_ARGS:-} --out $OUT; fi
if has pseudo_cifar; then echo "== pseudo-labelling, CIFAR-10 half"; t python3 bench/bench_pseudo_label.py --device cuda --part cifar --out $OUT; fi
if has dec_speed; then echo "== DEC epoch on 100k x 1280"; t python3 bench/bench_dec.py --gpu-speed --out $OUT; fi
if has dec_quality; then echo "== DEC quality on CUDA"; t python3 bench/bench_dec.py --device cuda --only ${DEC_ONLY:-digits,mnist,cifar} --pretrain-epochs ${DEC_PRETRAIN:-200} --compare-init --seeds ${DEC_SEEDS:-1,2,3} --out $OUT; fi
if has reid_speed; then echo "== re-identification training it/s at batch 256"; for hw in "256 128" "128 64"; do set -- $hw; t python3 bench/bench_reid_speed.py --device cuda --batch 256 --height $1 --width $2 --steps 20 --warmup 3 --out $OUT; done; fi
