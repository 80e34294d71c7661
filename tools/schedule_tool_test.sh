#!/usr/bin/env bash
# Smoke test of //tools:schedule: every format works, stats carry the bubble
# line with the GPipe formula's value, bad input fails with a message.
set -euo pipefail
tool="$(dirname "$0")/schedule"
[[ -x "${tool}" ]] || tool="tools/schedule"
out="$("${tool}" --scheduler=gpipe --stages=4 --microbatches=8 --format=stats)"
echo "${out}"
# (p-1)/(m+p-1) = 3/11
grep -q '^bubble_fraction=0.272727' <<<"${out}"
"${tool}" --scheduler=gpipe --stages=2 --microbatches=3 --format=grid | grep -q '1F2'
"${tool}" --scheduler=gpipe --stages=2 --microbatches=3 --format=csv | grep -q '^1,1RA0<0,1F0'
svg="${TEST_TMPDIR:-/tmp}/t.svg"
"${tool}" --scheduler=gpipe --stages=3 --microbatches=4 --format=stats --svg="${svg}" >/dev/null
grep -q '</svg>' "${svg}"
if "${tool}" --scheduler=nope --format=stats 2>err.txt; then
  echo "unknown scheduler accepted"; exit 1
fi
grep -q -- "--scheduler=nope: unknown" err.txt
if "${tool}" --scheduler=gpipe --microbatches=0 --format=stats 2>err.txt; then
  echo "zero micro-batches accepted"; exit 1
fi
grep -q -- "--microbatches=0: must be at least 1" err.txt
# Stats carry each stage's stash peak; tspipe_1f1b needs per-micro-batch
# losses and says so otherwise.
"${tool}" --scheduler=tspipe_1f1b --stages=4 --microbatches=8 --teacher --microbatch_losses \
  --format=stats | grep -Eq '^stash_peak_stage3=[0-9]+\+[0-9]+$'
if "${tool}" --scheduler=tspipe_1f1b --teacher --format=stats 2>err.txt; then
  echo "tspipe_1f1b accepted a whole-batch loss"; exit 1
fi
grep -q "tspipe_1f1b computes the loss per micro-batch" err.txt
# Zero bubble: split backwards in the grid, their weight stash and, with
# measured sizes, the stash in bytes (gpipe at 2 stages, 3 micro-batches:
# 3 x 100 and 3 x 200 + 3 x 10 teacher outputs).
"${tool}" --scheduler=tspipe_zb --stages=2 --microbatches=2 --teacher --microbatch_losses \
  --format=grid | grep -q '1W0'
"${tool}" --scheduler=tspipe_zb --stages=4 --microbatches=6 --teacher --teacher_updates \
  --microbatch_losses --format=stats | grep -Eq '^weight_stash_peak_stage0=[0-9]+$'
out="$("${tool}" --scheduler=gpipe --stages=2 --microbatches=3 --teacher --format=stats \
  --student_stash_bytes=100,200 --teacher_output_bytes=0,10)"
grep -q '^stash_bytes_stage0=300$' <<<"${out}"
grep -q '^stash_bytes_stage1=630$' <<<"${out}"
if "${tool}" --scheduler=gpipe --student_stash_bytes=1,x --format=stats 2>err.txt; then
  echo "bad byte list accepted"; exit 1
fi
grep -q -- "--student_stash_bytes=1,x: 'x' is not a number" err.txt
if "${tool}" --scheduler=gpipe --backward_input_cost=nan --format=stats 2>err.txt; then
  echo "nan cost accepted"; exit 1
fi
grep -q -- "--backward_input_cost" err.txt
echo PASS
