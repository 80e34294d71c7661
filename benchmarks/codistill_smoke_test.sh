#!/usr/bin/env bash
# The codistillation benchmark: two models, each on its own pipeline (one
# device per model under sequential, two stages each under gpipe and
# tspipe), the comparison table with bytes sent, and clear refusals.
set -euo pipefail
bin="$1"
out="${TEST_TMPDIR:-/tmp}/codistill.txt"
opts="widths=4,8,blocks=1,1,models=2,exchange_every=2"
"${bin}" --scheduler=all --stages=2 --microbatches=2 --batch_size=8 --algorithm_options="${opts}" \
  --steps_per_iteration=2 --benchmark_min_time=0.01 --plot="${TEST_TMPDIR:-/tmp}/c.svg" \
  >"${out}" 2>&1 || { cat "${out}"; exit 1; }
cat "${out}"
grep -Eq '^sequential +2 .* 1\.000 +1\.000 ' "${out}"
grep -Eq '^gpipe +4 ' "${out}"
grep -Eq '^tspipe +4 ' "${out}"
grep -q "skipping dp: each model runs on its own pipeline" "${out}"
grep -q 'ranks per stage 0|2;1|3' "${out}"
# The exchanges send bytes (every 2 steps).
awk '/^tspipe / { if ($NF + 0 <= 0) { print "no bytes sent: " $0; exit 1 } }' "${out}"
if "${bin}" --scheduler=gpipe --batch_size=6 --microbatches=2 --algorithm_options="${opts}" \
    >"${out}" 2>&1; then
  echo "accepted a batch the models cannot share"; exit 1
fi
grep -q '2 models x 2 micro-batches do not divide the batch of 6 samples' "${out}"
echo PASS
