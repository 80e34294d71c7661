#!/usr/bin/env bash
# BYOL pre-training and linear evaluation on a few hundred Fashion-MNIST
# images, both policies; a scheduler that cannot honour a policy is refused.
set -euo pipefail
bin="$1"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
out="${tmp}/out.txt"
small=(--train_samples=256 --eval_samples=200 --batch_size=32 --microbatches=4
  --algorithm_options=widths=8,16,blocks=1,1,hidden=32,projection=16 --steps=4 --log_every=2)
"${bin}" "${small[@]}" --runs=gpipe:sync,tspipe:tspipe_delayed,dp:sync \
  --report="${tmp}/report.md" >"${out}" 2>&1 || { cat "${out}"; exit 1; }
cat "${out}"
grep -Eq '^random encoder ' "${out}"
grep -Eq '^byol +tspipe +tspipe_delayed +4 ' "${out}"
grep -Eq '^byol +gpipe +sync +4 ' "${out}"
grep -q 'byol/tspipe:tspipe_delayed: step 4/4, loss' "${out}"
grep -q '| byol | dp | sync |' "${tmp}/report.md"
if "${bin}" "${small[@]}" --runs=gpipe:tspipe_delayed >"${out}" 2>&1; then
  echo "gpipe accepted the delayed policy"; exit 1
fi
grep -q "scheduler 'gpipe' cannot honour update policy 'tspipe_delayed'" "${out}"
# Checkpoints: a run that stops after step 2 (its step-4 checkpoint
# removed, as if killed) and resumes ends where the uninterrupted one did.
ck="${tmp}/ck"
rm -rf "${ck}"
one=(--runs=tspipe:tspipe_delayed --balance=even --checkpoint_dir="${ck}")
"${bin}" "${small[@]}" "${one[@]}" --checkpoint_every=2 >"${out}" 2>&1 || { cat "${out}"; exit 1; }
straight="$(grep -E '^byol +tspipe' "${out}")"
ls "${ck}/byol_tspipe_tspipe_delayed"
rm -rf "${ck}/byol_tspipe_tspipe_delayed/step-00000004"
"${bin}" "${small[@]}" "${one[@]}" --resume >"${out}" 2>&1 || { cat "${out}"; exit 1; }
cat "${out}"
grep -q 'byol/tspipe:tspipe_delayed: resumed from .* at step 2 of 4' "${out}"
resumed="$(grep -E '^byol +tspipe' "${out}")"
# Same accuracy (the seconds column differs).
if [[ "$(awk '{print $1,$2,$3,$4,$5}' <<<"${straight}")" != "$(awk '{print $1,$2,$3,$4,$5}' <<<"${resumed}")" ]]; then
  echo "resumed run differs: '${straight}' vs '${resumed}'"; exit 1
fi
# Another configuration is refused, naming what differs.
if "${bin}" "${small[@]}" "${one[@]}" --resume --learning_rate=0.01 >"${out}" 2>&1; then
  echo "a checkpoint of another learning rate was taken"; exit 1
fi
grep -q 'learning_rate is 0.05 in the checkpoint, 0.01 in this run' "${out}"
echo PASS
