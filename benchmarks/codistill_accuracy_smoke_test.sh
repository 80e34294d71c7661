#!/usr/bin/env bash
# Codistillation against dp and one model alone on a few hundred
# Fashion-MNIST images: every row, the traffic and the link table come out.
set -euo pipefail
bin="$1"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
out="${tmp}/out.txt"
"${bin}" --train_samples=256 --eval_samples=200 --batch_size=32 --steps=6 --log_every=3 \
  --algorithm_options=widths=4,8,blocks=1,1,exchange_every=2 --report="${tmp}/report.md" \
  >"${out}" 2>&1 || { cat "${out}"; exit 1; }
cat "${out}"
for run in "codistill top1_model0" "codistill top1_model1" "codistill top1 " \
    "codistill top1_ensemble" "dp " "alone "; do
  grep -q "^${run}" "${out}" || { echo "no row '${run}'"; exit 1; }
done
grep -q 'codistill: step 6/6, loss' "${out}"
grep -Eq '^0 +[0-9.]+ +[0-9.]+ ' "${out}"
grep -q '| link ms/MB |' "${tmp}/report.md"
# dp all-reduces every step; codistillation exchanges every 2: it sends less.
awk '/^dp / { dp = $(NF-1) } /^codistill top1 / { c = $(NF-1) }
     END { if (!(c > 0 && c < dp)) { print "codistill " c " KB/step vs dp " dp; exit 1 } }' "${out}"
echo PASS
