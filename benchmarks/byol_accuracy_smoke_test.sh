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
echo PASS
