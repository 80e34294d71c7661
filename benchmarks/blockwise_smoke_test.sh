#!/usr/bin/env bash
# The blockwise distillation benchmark: pipebd, dp and sequential on a tiny
# configuration, the comparison table and plot, and clear errors.
set -euo pipefail
bin="$1"
out="${TEST_TMPDIR:-/tmp}/blockwise.txt"
plot="${TEST_TMPDIR:-/tmp}/blockwise.svg"
"${bin}" --scheduler=all --stages=2 --microbatches=2 --batch_size=8 \
  --algorithm_options=teacher_widths=4,8,teacher_blocks=1,1 --steps_per_iteration=2 \
  --benchmark_min_time=0.01 --plot="${plot}" >"${out}" 2>&1 || {
  cat "${out}"; exit 1; }
cat "${out}"
grep -Eq '^pipebd +2 ' "${out}"
grep -Eq '^dp +2 ' "${out}"
grep -Eq '^sequential +1 .* 1\.000 ' "${out}"
grep -q '</svg>' "${plot}"
# The end-to-end pipelines cannot run it, and say why.
grep -q 'skipping tspipe: ' "${out}"
# Bad input fails before any timing, naming the problem.
if "${bin}" --scheduler=pipebd --stages=9 --microbatches=2 --batch_size=8 \
    --algorithm_options=teacher_widths=4,8,teacher_blocks=1,1 >"${out}" 2>&1; then
  echo "accepted more devices than blocks x micro-batches"; exit 1
fi
grep -q 'pipebd gives every device at least one block and micro-batch: 9 devices for 4 blocks x 2 micro-batches' "${out}"
if "${bin}" --scheduler=pipebd --balance=2,2 >"${out}" 2>&1; then
  echo "accepted a balance"; exit 1
fi
grep -q 'do not apply' "${out}"
echo PASS
