#!/usr/bin/env bash
# The blockwise distillation benchmark: pipebd, dp and sequential on a tiny
# configuration, the comparison table and plot, named teachers, and clear
# errors.
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
# Named teachers, each with the student that mirrors it block for block
# (models/mirror_student.h): every block pair is a stage.
for teacher in resnet18 vit_tiny_patch16; do
  "${bin}" --scheduler=pipebd --stages=2 --microbatches=2 --batch_size=8 \
    --algorithm_options=teacher=${teacher},image_size=32 --steps_per_iteration=2 \
    --benchmark_min_time=0.01 --benchmark_repetitions=1 >"${out}" 2>&1 || {
    cat "${out}"; exit 1; }
  grep -Eq '^pipebd +2 ' "${out}"
done
grep -q 'auto balance student 1,1,1,1,1,1,1,1,1,1,1,1,1,1,' "${out}"  # vit_tiny: 14 blocks.
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
if "${bin}" --scheduler=pipebd --algorithm_options=teacher=resnet5 >"${out}" 2>&1; then
  echo "accepted an unknown network"; exit 1
fi
grep -q 'teacher=resnet5 is not a known network (known: small_resnet, resnet18' "${out}"
echo PASS
