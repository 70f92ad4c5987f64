#!/usr/bin/env bash
# One lent-GPU call, run from the repository root (session 6's plan): TRAIN one-pair models from
# scratch with the best CPU recipe (batch 8, lr 5e-3, the 115 steps that fit in 60 s on the 2-core
# CPU, float32 as there) on each of the 16 train pairs — turned negatives for seeds 0-2, then the
# plain loss for seed 0 — and bring the models back: they are scored on the CPU afterwards
# (registration settings are what is being compared, not the training).
# Models go to runs/session/models and, packed as one tarball, to $OUT when the script ends (also
# when cut off): the device tool returns only a few files per call, so never leave many there.
# Call it with carry [".devdata"] and DATA=.devdata (a copy of ../shared/data).
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
DATA=${DATA:-../shared/data}
FINAL_OUT=${OUT:-runs/gpu-out}
OUT=runs/session
mkdir -p "$OUT/models" "$OUT/logs" "$FINAL_OUT"
trap 'tar czf "$FINAL_OUT/session.tgz" runs/session' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"

pairs=$(awk -F, 'NR > 1 && $2 == "train" {print $1}' "$DATA/bf_shg/pairs.csv")
{ for seed in 0 1 2; do for pair in $pairs; do echo "$pair $seed turned"; done; done
  for pair in $pairs; do echo "$pair 0 plain"; done; } |
    timeout "${SECONDS_BUDGET:-330}" xargs -P 12 -L 1 bash -c '
        extra=$([ "$2" = turned ] && echo --turned-negatives)
        python3 benchmarks/train_one_pair.py --data "'"$DATA"'/bf_shg" --device cuda $extra \
            --lr 5e-3 --batch-size 8 --steps 115 --pair "$0" --seed "$1" --seeds 0 \
            --save "'"$OUT"'/models/$0_s$1_$2" > "'"$OUT"'/logs/$0_s$1_$2.txt" 2>&1'
ls "$OUT/models" | wc -l
tail -q -n 1 "$OUT"/logs/*.txt | sort | uniq -c | sort -rn | head -5
