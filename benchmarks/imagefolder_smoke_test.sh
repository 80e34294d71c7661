#!/usr/bin/env bash
# --data=imagefolder end to end: KD and BYOL (two views) train on a user's
# ImageFolder tree decoded by the C++ loader, and a corrupt image stops the
# run with one line naming it, or is skipped with --skip_bad_images.
set -euo pipefail
kd="$1"
byol="$2"
jpeg="$3"
png="$4"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
root="${tmp}/folder"
out="${tmp}/out.txt"
rm -rf "${root}"
for i in 0 1 2 3 4 5 6 7; do
  mkdir -p "${root}/cat" "${root}/dog"
  cp "${jpeg}" "${root}/cat/${i}.jpg"
  cp "${png}" "${root}/dog/${i}.png"
done
tiny=(--stages=2 --microbatches=2 --batch_size=8 --steps=2 --steps_per_iteration=1
      --balance=even --data=imagefolder --data_dir="${root}" --data_threads=2)
"${kd}" "${tiny[@]}" --scheduler=tspipe,sequential \
  --algorithm_options=widths=4,8,blocks=1,1,teacher_widths=4,8,teacher_blocks=1,1 \
  >"${out}" 2>&1 || { cat "${out}"; exit 1; }
grep -Eq '^tspipe +2 ' "${out}"
"${byol}" "${tiny[@]}" --scheduler=tspipe \
  --algorithm_options=widths=4,8,blocks=1,1,hidden=16,projection=8,image_size=32,channels=3 \
  >"${out}" 2>&1 || { cat "${out}"; exit 1; }
grep -Eq '^tspipe +2 ' "${out}"
# Bad data: one line naming the file, nothing trained; or skipped and counted.
printf 'not an image' >"${root}/cat/3.jpg"
if "${kd}" "${tiny[@]}" --scheduler=tspipe --algorithm_options=widths=4,8,blocks=1,1,teacher_widths=4,8,teacher_blocks=1,1 >"${out}" 2>&1; then
  echo "trained on a corrupt image"; exit 1
fi
grep -q 'cat/3.jpg: not a JPEG or PNG image' "${out}" || { cat "${out}"; exit 1; }
"${kd}" "${tiny[@]}" --scheduler=tspipe --skip_bad_images \
  --algorithm_options=widths=4,8,blocks=1,1,teacher_widths=4,8,teacher_blocks=1,1 \
  >"${out}" 2>&1 || { cat "${out}"; exit 1; }
grep -q 'skipping bad image .*cat/3.jpg' "${out}"
grep -Eq '^tspipe +2 ' "${out}"
if "${kd}" "${tiny[@]}" --data_dir="${tmp}/nowhere" >"${out}" 2>&1; then
  echo "accepted a missing folder"; exit 1
fi
grep -q 'nowhere' "${out}" || { cat "${out}"; exit 1; }
echo PASS
