#!/usr/bin/env bash
# One lent-GPU call, run from the repository root (session 5's plan): train bf-shg candidates with
# the space-to-depth U-Net (the shipped 2.0.0 recipe, several runs sharing the GPU, each to a
# wall-clock budget), screen one-pair training from scratch with it at the steps 60 s of the
# 2-core CPU allow, then a quick CUDA screening of every candidate on the val split.
# Results go to runs/session and, packed as one tarball, to $OUT when the script ends (also when
# cut off): the device tool returns only a few files per call, so never leave many there.
# Call it with carry [".devdata"] and DATA=.devdata (a copy of ../shared/data).
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
DATA=${DATA:-../shared/data}
BUDGET=${SECONDS_PER_RUN:-240}
FINAL_OUT=${OUT:-runs/gpu-out}
OUT=runs/session
mkdir -p "$OUT/models" "$OUT/one_pair" "$FINAL_OUT"
trap 'tar czf "$FINAL_OUT/session.tgz" runs/session' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"

# 1. bf-shg candidates: the 2.0.0 command (docs/models.md) plus the architecture under test.
train() {  # name seed base_channels equivariance_weight
    python3 -m napari_comir train --pairs "$DATA/bf_shg/pairs.csv" --split train --preset bf-shg \
        --name bf-shg --steps 1000000 --max-seconds "$BUDGET" --batch-size 32 --lr 1e-3 --seed "$2" \
        --device cuda --base-channels "$3" --space-to-depth 2 --equivariance-weight "$4" \
        --out "$OUT/models/$1" > "$OUT/models/$1.log" 2>&1
    echo "$1: $(tail -c 300 "$OUT/models/$1.log" | tr '\r' '\n' | tail -n 2 | tr '\n' ' ')"
}
train s2-b8-w03-s0 0 8 0.3 &
train s2-b8-w03-s1 1 8 0.3 &
train s2-b8-w1-s0 0 8 1 &
train s2-b12-w03-s0 0 12 0.3 &
train s2-b12-w03-s1 1 12 0.3 &

# 2. Meanwhile, one-pair training from scratch with the faster network (float32, as on the CPU):
#    batch 8 for 290 steps or batch 16 for 145 steps, turned negatives, seeds 0-4.
for seed in 0 1 2 3 4; do echo "$seed 8 290"; echo "$seed 16 145"; done |
    timeout $((BUDGET - 10)) xargs -P 4 -L 1 bash -c 'python3 benchmarks/train_one_pair.py \
        --data "'"$DATA"'/bf_shg" --device cuda --space-to-depth 2 --turned-negatives --lr 5e-3 \
        --batch-size "$1" --steps "$2" --seed "$0" --seeds 5 > "'"$OUT"'/one_pair/b$1_s$0.txt" 2>&1'
wait
for f in "$OUT"/one_pair/*.txt; do echo "== $f"; tail -n 2 "$f"; done

# 3. CUDA screening of the candidates (val split, 5 seeds, half-precision inference).
for card in "$OUT"/models/*.json; do
    timeout 90 python3 benchmarks/evaluate_model.py "$card" --device cuda --seeds 5 --data "$DATA" \
        --scenarios 30,180,hard > "${card%.json}.eval" 2>&1 &
done
wait
for f in "$OUT"/models/*.eval; do echo "== $f"; cat "$f"; done
