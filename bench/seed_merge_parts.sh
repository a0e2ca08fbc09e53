#!/usr/bin/env bash
# Folds profile parts (profiles/data/parts/*.jsonl, measured per method family by
# `accel-advisor profile` into their own stores) into the shipped seed grid, then removes them.
# Import skips run ids already stored, so the merge is idempotent. See docs/seed-profiles.md.
set -euo pipefail
cd "$(dirname "$0")/.."
store=$(mktemp -d)
export ACCEL_DATABASE_URL="sqlite:///$store/merge.db" ACCEL_DATA_DIR="$store"
accel-advisor db upgrade
accel-advisor profiles import profiles/data/seed_profiles.jsonl.gz
for part in profiles/data/parts/*.jsonl; do
  accel-advisor profiles import "$part"
done
accel-advisor profiles export --format jsonl --output "$store/seed.jsonl"
gzip -n -9 -c "$store/seed.jsonl" > profiles/data/seed_profiles.jsonl.gz
rm -f profiles/data/parts/*.jsonl
rm -rf "$store"
