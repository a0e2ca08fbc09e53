#!/usr/bin/env bash
# Profiles the intermediate zoo LMs (lm-2m, lm-4m, lm-16m) with the seed grid's methods so the
# advisor's unseen-model split has models on both sides of each held-out one (docs/advisor.md).
# Resumable like bench/executors_seed_grid.sh; breadth first, cheapest workloads first.
# Usage: ACCEL_DATABASE_URL=sqlite:////tmp/advisor_models.db bench/advisor_models_grid.sh
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE
METHODS=baseline,sys.compile,quant.int8_dynamic,quant.weight_only_int4,lm.spec.swift,lm.spec.medusa,lm.parallel.jacobi
METHODS=$METHODS,quant.int8_dynamic+lm.spec.swift,quant.int8_dynamic+lm.spec.medusa,quant.int8_dynamic+lm.parallel.jacobi
MODELS=zoo:lm-2m,zoo:lm-4m,zoo:lm-16m
accel() { python -c "from api.cli import app; app()" "$@"; }
profile() { accel profile --threads 1,2 --reps 5 --warmup 1 --methods "$METHODS" --models "$MODELS" "$@"; }

accel zoo build lm-2m lm-4m lm-16m
profile --workloads "batch=1 prompt=32 gen=32"
profile --workloads "batch=4,16 prompt=32 gen=32" --max-call-seconds 1.0
profile --workloads "batch=1,4 prompt=256 gen=32" --max-call-seconds 1.0
profile --workloads "batch=1,4 prompt=32 gen=128" --max-call-seconds 1.0
profile --workloads "batch=1 prompt=1024 gen=32" --max-call-seconds 1.0
