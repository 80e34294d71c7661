#!/usr/bin/env bash
# Runs the Fashion-MNIST KD pipeline on a few hundred images: the teacher is
# trained and saved, then loaded on a second run; distillation under TSPipe
# must give the sequential run's parameters; bad inputs fail with clear
# messages.
set -euo pipefail
bin="$1"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
out="${tmp}/out.txt"
ckpt="${tmp}/teacher.pt"
small=(--train_samples=256 --eval_samples=200 --batch_size=32 --microbatches=4
  --algorithm_options=widths=8,16,blocks=1,1,teacher_widths=8,16,teacher_blocks=2,1 --log_every=2
  --teacher_checkpoint="${ckpt}" --report="${tmp}/report.md")
"${bin}" "${small[@]}" --teacher_steps=4 --steps=4 --scheduler=tspipe,gpipe,dp,sequential \
  >"${out}" 2>&1 || { cat "${out}"; exit 1; }
cat "${out}"
test -s "${ckpt}"
grep -q 'saved the teacher to' "${out}"
grep -q 'step 4/4, loss' "${out}"
grep -q '| kd student | tspipe |' "${tmp}/report.md"
grep -Eq '^student without teacher +sequential' "${out}"
# With a frozen teacher every scheduler computes sequential KD: parameters
# agree to float rounding.
awk '/^kd student/ { if ($6 == "-" || $6 + 0 > 1e-4) { print "differs: " $0; bad = 1 } }
     END { exit bad }' "${out}"
# Second run: the checkpoint is loaded, not retrained.
"${bin}" "${small[@]}" --teacher_steps=4 --steps=2 --scheduler=sequential >"${out}" 2>&1 \
  || { cat "${out}"; exit 1; }
grep -q 'loading the teacher from' "${out}"
grep -Eq '^teacher \(loaded\)' "${out}"
# A checkpoint of another shape is refused, naming the file.
if "${bin}" "${small[@]}" --steps=1 \
    --algorithm_options=widths=8,16,blocks=1,1,teacher_widths=8,32,teacher_blocks=2,1 \
    >"${out}" 2>&1; then
  echo "accepted a checkpoint of the wrong shape"; exit 1
fi
grep -q "checkpoint ${ckpt} does not fit the teacher (widths 8,32" "${out}"
# A safetensors teacher: trained and exported, then loaded through the same
# path; the student is exported too (one scheduler: the path as given).
st="${tmp}/teacher.safetensors"
for run in train load; do
  "${bin}" "${small[@]}" --teacher_checkpoint="${st}" --teacher_steps=2 --steps=2 \
    --scheduler=sequential --export="${tmp}/student.safetensors" >"${out}" 2>&1 \
    || { cat "${out}"; exit 1; }
done
grep -q "loading the teacher from ${st}" "${out}"
grep -Eq '^teacher \(loaded\)' "${out}"
grep -q "exported the student to ${tmp}/student.safetensors" "${out}"
test -s "${tmp}/student.safetensors"
# Missing data names the file and the package.
mkdir -p "${tmp}/nowhere"
if "${bin}" "${small[@]}" --data_dir="${tmp}/nowhere" --steps=1 >"${out}" 2>&1; then
  echo "ran without data"; exit 1
fi
grep -q "${tmp}/nowhere/train-images-idx3-ubyte.gz is missing; install the Debian package dataset-fashion-mnist" "${out}"
echo PASS
