#!/usr/bin/env bash
# README's KD job against a plain PyTorch user on the same cores, in one
# interleaved run: each round times tools/kd_pytorch_baseline.py (the same
# models, batch, loss and optimizer, torch.set_num_threads(THREADS)) and then
# the tspipe benchmark's rows, so that a slow moment of the machine hits
# both. Prints each round's samples/s and the medians' ratios to PyTorch.
#
#   tools/compare_with_pytorch.sh [rounds]      (default 3)
#
# Env: PYTHON (a Python with PyPI's torch; default
# ~/.cache/tspipe/pytorch-venv/bin/python, made by
# `python3 -m venv ~/.cache/tspipe/pytorch-venv &&
#  ~/.cache/tspipe/pytorch-venv/bin/pip install torch==2.11.0`), THREADS (2).
# Rows timed on the tspipe side (one Google Benchmark repetition each):
#   tspipe and dp on 2 stages/replicas, 1 thread per rank (README's job);
#   sequential with THREADS intra-op threads, the whole batch as one
#   micro-batch (PyTorch's step exactly) and as 4 (README's micro-batching).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
python="${PYTHON:-${HOME}/.cache/tspipe/pytorch-venv/bin/python}"
threads="${THREADS:-2}"
"${python}" -c 'import torch' 2>/dev/null || {
  echo "no PyPI torch in ${python}; see the comment at the top of $0" >&2; exit 1; }
./tools/bazel build //benchmarks:kd
bin=bazel-bin/benchmarks/kd
out="$(mktemp -d)"
trap 'rm -rf "${out}"' EXIT
rate() {  # The samples/s of row $2 in table file $1.
  awk -v row="$2" '$1 == row { print $3; exit }' "$1"
}
run_tspipe() {  # $1: label; rest: flags.
  local label="$1"; shift
  "${bin}" --benchmark_repetitions=1 --benchmark_min_time=3 "$@" >"${out}/t.txt" 2>&1 || {
    cat "${out}/t.txt" >&2; exit 1; }
  for row in $(awk '$1 == "scheduler" { on = 1; next } on && $2 ~ /^[0-9]+$/ { print $1 }' "${out}/t.txt"); do
    echo "${label}${row} $(rate "${out}/t.txt" "${row}")"
  done
}
for ((r = 1; r <= rounds; ++r)); do
  {
    py=$("${python}" tools/kd_pytorch_baseline.py --threads "${threads}" --steps 40 --warmup 8 |
      sed -n 's/.*samples_per_second=\([0-9.]*\).*/\1/p')
    echo "pytorch_${threads}threads ${py}"
    run_tspipe "" --scheduler=tspipe,dp --stages=2 --microbatches=4
    run_tspipe "mb1_" --scheduler=sequential --microbatches=1 --threads_per_device="${threads}"
    run_tspipe "mb4_" --scheduler=sequential --microbatches=4 --threads_per_device="${threads}"
  } | sed "s/^/round ${r}: /" | tee -a "${out}/all.txt"
done
echo
python3 - "${out}/all.txt" "pytorch_${threads}threads" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    _, _, name, value = line.split()
    rows.setdefault(name, []).append(float(value))
base = statistics.median(rows[sys.argv[2]])
for name in sorted(rows):
    m = statistics.median(rows[name])
    print(f"{name:24s} median {m:8.1f} samples/s  vs PyTorch {m / base:.3f}  ({len(rows[name])} rounds)")
PY
