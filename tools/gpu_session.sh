#!/usr/bin/env bash
# One lent-GPU session, run from the repository root (session 3's plan): core tests on CUDA, the
# GPU benchmark alone, then — sharing the GPU — rgb-nir retraining candidates and a screening
# sweep of from-scratch one-pair recipes, then a screening of the rgb-nir candidates.
# Results go to runs/session and, packed as one tarball, to $OUT when the script ends (also when
# cut off): the device tool returns only a few files per call, so never leave many there.
# Call it with carry [".devdata"] and DATA=.devdata (a copy of ../shared/data).
#   DATA=folder with bf_shg/ and zurich/   SECONDS_PER_RUN=rgb-nir training budget (default 230)
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
DATA=${DATA:-../shared/data}
BUDGET=${SECONDS_PER_RUN:-230}
FINAL_OUT=${OUT:-runs/gpu-out}
OUT=runs/session
mkdir -p runs/gpu "$OUT/one_pair" "$FINAL_OUT"
trap 'tar czf "$FINAL_OUT/session.tgz" runs/session runs/gpu' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"

# 1. The device code paths (batched refinement, on-device normalisation) under CUDA.
if python3 -c "import pytest" 2>/dev/null; then
    timeout 90 python3 -m pytest -q -p no:cacheprovider tests/core/test_data.py \
        tests/core/test_registration.py tests/core/test_models_inference.py 2>&1 | tail -n 4 | tee "$OUT/tests.txt"
fi

# 2. GPU timings, with nothing else running.
timeout 120 python3 benchmarks/gpu.py --data "$DATA" --train-steps 0 2>&1 | tee "$OUT/gpu_benchmark.md"

# 3a. rgb-nir candidates: 1.0.0 continued with the equivariance term, and one run from scratch.
rgbnir() {  # name weight lr [extra args...]
    local name=$1 weight=$2 lr=$3; shift 3
    python3 -m napari_comir train --fixed "$DATA/zurich/zh17_NIR.tif" --moving "$DATA/zurich/zh17_RGB.tif" \
        --preset rgb-nir --name rgb-nir --steps 1000000 --max-seconds "$BUDGET" --batch-size 32 \
        --lr "$lr" --device cuda --equivariance-weight "$weight" --out "runs/gpu/$name" "$@" \
        > "runs/gpu/$name.log" 2>&1
}
rgbnir cont-w005 0.05 2e-4 --from rgb-nir --update-batchnorm &
rgbnir cont-w01 0.1 2e-4 --from rgb-nir --update-batchnorm &
rgbnir cont-w02 0.2 2e-4 --from rgb-nir --update-batchnorm &
rgbnir cont-w03-lr1 0.3 1e-4 --from rgb-nir --update-batchnorm &
rgbnir cont-w01-lr5 0.1 5e-4 --from rgb-nir --update-batchnorm &
rgbnir scratch-w01 0.1 1e-3 --seed 0 &

# 3b. One-pair recipes at the step counts that fit 60 s on the 2-core CPU (float32, no AMP).
recipes=(
    "base|--lr 5e-3 --steps 60"
    "lr3e-3|--lr 3e-3 --steps 60"
    "lr8e-3|--lr 8e-3 --steps 60"
    "lr12e-3|--lr 1.2e-2 --steps 60"
    "sgd1e-2|--optimizer sgd --lr 1e-2 --steps 60"
    "sgd3e-2|--optimizer sgd --lr 3e-2 --steps 60"
    "tau1|--tau 1.0 --lr 5e-3 --steps 60"
    "tau025|--tau 0.25 --lr 5e-3 --steps 60"
    "nopenalty|--penalty 0 --lr 5e-3 --steps 60"
    "b8|--batch-size 8 --lr 5e-3 --steps 115"
    "b32|--batch-size 32 --lr 8e-3 --steps 30"
    "eq03|--equivariance-weight 0.3 --lr 5e-3 --steps 40"
    "pancreas-base|--pair sa_stroma_pancreas_2000_16 --lr 5e-3 --steps 60"
    "pancreas-lr8e-3|--pair sa_stroma_pancreas_2000_16 --lr 8e-3 --steps 60"
    "pancreas-tau1|--pair sa_stroma_pancreas_2000_16 --tau 1.0 --lr 5e-3 --steps 60"
)
for seed in 0 1 2 3 4 5 6 7 8 9 10 11; do
    for recipe in "${recipes[@]}"; do
        echo "${recipe%%|*}|$seed|${recipe#*|}"
    done
done | timeout 240 xargs -P 12 -I{} bash -c '
    IFS="|" read -r name seed args <<< "{}"
    python3 benchmarks/train_one_pair.py --data "'"$DATA"'/bf_shg" --device cuda --seeds 5 --c4-eval \
        --seed "$seed" $args > "'"$OUT"'/one_pair/${name}_s${seed}.txt" 2>&1'
wait

# 4. Screen the rgb-nir candidates (and 1.0.0 for reference) on CUDA.
for card in runs/gpu/*.json rgb-nir; do
    name=$(basename "${card%.json}")
    timeout 100 python3 benchmarks/evaluate_model.py "$card" --device cuda --seeds 10 --data "$DATA" \
        --scenarios 30,180,hard > "$OUT/screen_$name.txt" 2>&1 &
done
wait
for f in "$OUT"/screen_*.txt; do echo "== $f"; tail -n 12 "$f"; done
