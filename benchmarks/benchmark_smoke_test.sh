#!/usr/bin/env bash
# Runs a benchmark binary briefly with every scheduler and checks its report.
# $1: the binary; $2: its algorithm's options for a tiny model.
set -euo pipefail
bin="$1"
opts="${2:-}"
out="${TEST_TMPDIR:-/tmp}/bench.txt"
plot="${TEST_TMPDIR:-/tmp}/bench.svg"
trace="${TEST_TMPDIR:-/tmp}/trace.json"
# 3 steps per iteration: the recorded iteration then has a steady step.
"${bin}" --scheduler=all --stages=2 --microbatches=2 --batch_size=8 --algorithm_options="${opts}" \
  --steps_per_iteration=3 --benchmark_min_time=0.01 --plot="${plot}" --trace="${trace}" \
  --export="${TEST_TMPDIR:-/tmp}/student.safetensors" >"${out}" 2>&1 || { cat "${out}"; exit 1; }
cat "${out}"
grep -q 'samples_per_second' "${out}"
grep -Eq '^gpipe +2 ' "${out}"
grep -Eq '^tspipe +2 ' "${out}"
grep -Eq '^sequential +1 .* 1\.000 ' "${out}"
grep -q '</svg>' "${plot}"
# --export with several schedulers: one student file each.
test -s "${TEST_TMPDIR:-/tmp}/student.tspipe.safetensors"
test -s "${TEST_TMPDIR:-/tmp}/student.sequential.safetensors"
# The measured columns are filled in, and the trace has every scheduler's
# process, slices named in compact form and flow arrows; its SVG shows
# measured above simulated.
awk '$1 == "scheduler" { for (i = 1; i <= NF; ++i) { if ($i == "meas_bubble") b = i; if ($i == "meas/pred") p = i } }
     $1 == "tspipe" && $2 == 2 && b { ok = ($b ~ /^[0-9.]+$/ && $p ~ /^[0-9.]+$/) }
     END { if (!ok) { print "no measured bubble or period ratio for tspipe"; exit 1 } }' "${out}"
grep -q '"traceEvents"' "${trace}"
grep -q '"name": "tspipe"' "${trace}"
grep -q '"ph": "s"' "${trace}"
grep -Eq '"name": "1F[0-9]' "${trace}"
grep -q 'tspipe, measured' "${trace%.json}.svg"
grep -q 'tspipe, simulated from the measured costs' "${trace%.json}.svg"
# Sequence models add tokens/s; on synthetic data every sample holds
# max_length real tokens, so tokens/s = samples/s x max_length.
if [[ "${opts}" =~ max_length=([0-9]+) ]]; then
  awk -v len="${BASH_REMATCH[1]}" '
    $1 == "scheduler" { found = ($4 == "tokens/s") }
    found && $1 == "sequential" && $2 == 1 {
      # samples/s is printed to 0.1: allow its rounding, times len.
      d = $4 - $3 * len; ok = (d < 0 ? -d : d) <= 0.05 * len + 0.05; seen = 1
    }
    END { if (!seen || !ok) { print "tokens/s != samples/s x " len; exit 1 } }' "${out}"
fi
grep -q ': auto balance student ' "${out}"
# dp runs every algorithm except those whose loss needs the whole batch.
grep -Eq '^dp +2 ' "${out}" || grep -q "skipping dp: dp splits the mini-batch" "${out}"
# --help lists the algorithm's options.
"${bin}" --help >"${out}" 2>&1 || true
grep -q 'algorithm_options=name=value' "${out}"
# Bad input fails before any timing, naming the problem.
if "${bin}" --scheduler=gpipe --batch_size=10 --microbatches=4 --algorithm_options="${opts}" \
    >"${out}" 2>&1; then
  echo "accepted micro-batches that do not divide the batch"; exit 1
fi
grep -q '4 micro-batches do not divide the batch of 10 samples' "${out}"
if "${bin}" --scheduler=gpipe --stages=9 --algorithm_options="${opts}" >"${out}" 2>&1; then
  echo "accepted more stages than blocks"; exit 1
fi
grep -Eq '9 stages requested but the model has only [0-9]+ blocks' "${out}"
if "${bin}" --scheduler=gpipe --stages=2 --balance=1,2 --algorithm_options="${opts}" \
    >"${out}" 2>&1; then
  echo "accepted a bad balance"; exit 1
fi
grep -Eq 'balance \[1,2\] sums to 3 but the model has [0-9]+ blocks' "${out}"
if "${bin}" --scheduler=gpipe --algorithm_options=no_such_option=1 >"${out}" 2>&1; then
  echo "accepted an unknown algorithm option"; exit 1
fi
grep -q "has no option 'no_such_option'; its options: " "${out}"
if grep -q 'Check failure\|terminate called' "${out}"; then
  echo "a bad option crashed instead of failing cleanly"; exit 1
fi
echo PASS
