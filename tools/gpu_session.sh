#!/usr/bin/env bash
# One lent-GPU session, run from the repository root: GPU benchmarks, then the bundled-model
# training sweep (runs in parallel on the one GPU, each to a wall-clock budget), then a quick
# CUDA screening of every trained model. Results go to $OUT (a tarball of runs/gpu + logs).
#   DATA=folder with bf_shg/ and zurich/   SECONDS_PER_RUN=training budget (default 240)
#   DEVICE=cuda (cpu: a dry run without the GPU benchmark)
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
DATA=${DATA:-../shared/data}
BUDGET=${SECONDS_PER_RUN:-240}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu-out}
mkdir -p runs/gpu "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, numpy, skimage, tifffile, safetensors, tqdm; print('torch', torch.__version__)"

[ "$DEVICE" = cpu ] || timeout 120 python3 benchmarks/gpu.py --data "$DATA" --train-steps 30 2>&1 | tee "$OUT/gpu_benchmark.md"

train() {  # name preset weight [extra args...]
    local name=$1 preset=$2 weight=$3; shift 3
    if [ "$preset" = bf-shg ]; then
        source=(--pairs "$DATA/bf_shg/pairs.csv" --split train)
    else
        source=(--fixed "$DATA/zurich/zh17_NIR.tif" --moving "$DATA/zurich/zh17_RGB.tif")
    fi
    python3 -m napari_comir train "${source[@]}" --preset "$preset" --name "$preset" \
        --steps 1000000 --max-seconds "$BUDGET" --batch-size 32 --lr 1e-3 --seed 0 --device "$DEVICE" \
        --equivariance-weight "$weight" --out "runs/gpu/$name" "$@" > "runs/gpu/$name.log" 2>&1
    echo "$name: $(tail -c 300 "runs/gpu/$name.log" | tr '\r' '\n' | tail -n 2 | tr '\n' ' ')"
}
train bf-shg-w0 bf-shg 0 &
train bf-shg-w03 bf-shg 0.3 &
train bf-shg-w1 bf-shg 1 &
train bf-shg-w3 bf-shg 3 &
train rgb-nir-w0 rgb-nir 0 &
train rgb-nir-w1 rgb-nir 1 &
wait

for card in runs/gpu/*.json; do
    timeout 75 python3 benchmarks/evaluate_model.py "$card" --device "$DEVICE" --seeds 5 --data "$DATA" \
        --scenarios 30,180,hard > "${card%.json}.eval" 2>&1 &
done
wait
for f in runs/gpu/*.eval; do echo "== $f"; cat "$f"; done | tee "$OUT/screening.txt"
tar czf "$OUT/runs.tgz" runs/gpu
