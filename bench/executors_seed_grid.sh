#!/usr/bin/env bash
# Produces profiles/data/seed_profiles.jsonl.gz (see docs/seed-profiles.md).
# Every step is `accel-advisor profile`, which is resumable: rerunning skips stored run ids,
# so the steps go from "every model and hardware class once" to "as much as time allows".
# Usage: ACCEL_DATABASE_URL=sqlite:////tmp/seed.db bench/executors_seed_grid.sh
set -euo pipefail
# OpenMP threads that spin while waiting made 2-thread runs ~50x slower on the shared box
# (one team thread descheduled = every barrier waits a time slice); passive waiting avoids it.
export OMP_WAIT_POLICY=PASSIVE
METHODS=baseline,sys.compile,quant.int8_dynamic,quant.weight_only_int4,lm.spec.swift,lm.spec.medusa,lm.parallel.jacobi
COMPOSITES=baseline,quant.int8_dynamic+lm.spec.swift,quant.int8_dynamic+lm.spec.medusa,quant.int8_dynamic+lm.parallel.jacobi
BYTE_LMS=zoo:lm-1m,zoo:lm-8m,zoo:lm-30m
FULL="batch=1,4,16 prompt=32,256,1024 gen=32,128"
profile() { accel-advisor profile --threads 1,2 --reps 5 --warmup 1 "$@"; }

# 1. breadth first: the cheapest workload of every model on both hardware classes
profile --methods "$METHODS" --models "$BYTE_LMS,zoo:smollm2-135m" --workloads "batch=1 prompt=32 gen=32"
# 2. the zoo LMs over the full grid, cheapest tasks first, skipping the slowest per call
profile --methods "$METHODS" --models "$BYTE_LMS" --workloads "$FULL" --max-call-seconds 1.0
# 3. int8 stacked under each decoding strategy (the composition the catalogue predicts pays)
profile --methods "$COMPOSITES" --models "$BYTE_LMS" --workloads "$FULL" --max-call-seconds 1.0
# 4. SmolLM2 (the real pretrained model) at batch 4; 5. whatever time allows beyond that
profile --methods "$METHODS" --models zoo:smollm2-135m --workloads "batch=1,4 prompt=32 gen=32" --max-call-seconds 4.5
profile --methods "$METHODS" --models "$BYTE_LMS" --workloads "$FULL" --max-call-seconds 3.0
