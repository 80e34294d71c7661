#!/usr/bin/env bash
# Runs a benchmark binary briefly with every scheduler and checks its report.
set -euo pipefail
bin="$1"
out="${TEST_TMPDIR:-/tmp}/bench.txt"
plot="${TEST_TMPDIR:-/tmp}/bench.svg"
"${bin}" --scheduler=all --stages=2 --microbatches=2 --batch_size=8 --widths=4,8 \
  --blocks=1,1 --teacher_widths=8,8 --teacher_blocks=1,1 --steps_per_iteration=2 \
  --benchmark_min_time=0.01 --plot="${plot}" >"${out}" 2>&1 || {
  cat "${out}"; exit 1; }
cat "${out}"
grep -q 'samples_per_second' "${out}"
grep -Eq '^gpipe +2 ' "${out}"
grep -Eq '^tspipe +2 ' "${out}"
grep -Eq '^sequential +1 .* 1\.000 ' "${out}"
grep -q '</svg>' "${plot}"
grep -q ': auto balance student ' "${out}"
# dp runs every algorithm except those whose loss needs the whole batch.
grep -Eq '^dp +2 ' "${out}" || grep -q "skipping dp: dp splits the mini-batch" "${out}"
# Bad input fails before any timing, naming the problem.
if "${bin}" --scheduler=gpipe --batch_size=10 --microbatches=4 >"${out}" 2>&1; then
  echo "accepted micro-batches that do not divide the batch"; exit 1
fi
grep -q '4 micro-batches do not divide the batch of 10 samples' "${out}"
if "${bin}" --scheduler=gpipe --stages=9 --blocks=1,1 --widths=4,8 >"${out}" 2>&1; then
  echo "accepted more stages than blocks"; exit 1
fi
grep -Eq '9 stages requested but the model has only [0-9]+ blocks' "${out}"
if "${bin}" --scheduler=gpipe --stages=2 --balance=1,2 >"${out}" 2>&1; then
  echo "accepted a bad balance"; exit 1
fi
grep -Eq 'balance \[1,2\] sums to 3 but the model has [0-9]+ blocks' "${out}"
echo PASS
