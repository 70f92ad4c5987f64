#!/usr/bin/env bash
# One lent-GPU call, run from the repository root (session 5's second plan): one-pair training
# from scratch with the best CPU recipe (batch 8, lr 5e-3, turned negatives, the 115 steps that
# fit in 60 s on the 2-core CPU, float32 as there) on EACH of the 16 train pairs, 2 seeds: which
# pairs teach a representation that registers unseen tissue?
# Results go to runs/session and, packed as one tarball, to $OUT when the script ends (also when
# cut off): the device tool returns only a few files per call, so never leave many there.
# Call it with carry [".devdata"] and DATA=.devdata (a copy of ../shared/data).
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
DATA=${DATA:-../shared/data}
FINAL_OUT=${OUT:-runs/gpu-out}
OUT=runs/session
mkdir -p "$OUT/one_pair" "$FINAL_OUT"
trap 'tar czf "$FINAL_OUT/session.tgz" runs/session' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"

awk -F, 'NR > 1 && $2 == "train" {print $1}' "$DATA/bf_shg/pairs.csv" |
    while read -r pair; do for seed in 0 1; do echo "$pair $seed"; done; done |
    timeout "${SECONDS_BUDGET:-330}" xargs -P 8 -L 1 bash -c 'python3 benchmarks/train_one_pair.py \
        --data "'"$DATA"'/bf_shg" --device cuda --turned-negatives --lr 5e-3 --batch-size 8 \
        --steps 115 --pair "$0" --seed "$1" --seeds 5 > "'"$OUT"'/one_pair/$0_s$1.txt" 2>&1'
for f in "$OUT"/one_pair/*.txt; do echo "== $f"; tail -n 2 "$f"; done
