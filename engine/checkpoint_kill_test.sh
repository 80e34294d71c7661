#!/usr/bin/env bash
# SIGKILLs a training run that checkpoints after every step, many times at
# random moments (half of them the moment a checkpoint file is being
# written), and after every kill checks that the newest complete checkpoint
# loads and equals a run that never stopped; no half-written file may ever
# be taken for a checkpoint. $1: resume_kill_helper. $2: rounds.
set -uo pipefail
helper="$1"
rounds="${2:-24}"
dir="${TEST_TMPDIR:-/tmp}/kill_ckpt.$$"
rm -rf "${dir}"
RANDOM=7
resumed=0
in_write=0
for ((i = 0; i < rounds; i++)); do
  "${helper}" train "${dir}" 1000000 2>/dev/null &
  pid=$!
  if ((i % 2 == 0)); then
    # Random moment: 0.05 to 1.5 s in (the start-up takes part of it).
    sleep "$(printf '0.%02d' $((5 + RANDOM % 95)))"
    ((RANDOM % 3 == 0)) && sleep 0.5
  else
    # The moment a temporary (half-written) checkpoint file appears.
    for ((w = 0; w < 3000; w++)); do
      if compgen -G "${dir}/step-*/*.tmp.*" >/dev/null; then
        in_write=$((in_write + 1))
        break
      fi
      sleep 0.001
    done
  fi
  kill -9 "${pid}" 2>/dev/null
  wait "${pid}" 2>/dev/null
  out="$("${helper}" check "${dir}" 2>&1)" || {
    echo "round ${i}: the checkpoint after the kill did not load right: ${out}"
    ls -lR "${dir}"
    exit 1
  }
  case "${out}" in
    resumed*) resumed=$((resumed + 1)) ;;
    none) ;;
    *) echo "round ${i}: unexpected '${out}'"; exit 1 ;;
  esac
  echo "round ${i}: ${out}"
  # Keep the straight runs the check compares with short.
  if [[ "${out}" =~ ^resumed\ ([0-9]+) ]] && ((BASH_REMATCH[1] > 30)); then rm -rf "${dir}"; fi
done
# Leftovers of killed writers are there, and were never taken.
echo "kills inside a write: ${in_write}; rounds that resumed: ${resumed} of ${rounds}"
if ((resumed < rounds / 3 || in_write < rounds / 6)); then
  echo "too few rounds resumed or were killed inside a write to mean anything"
  exit 1
fi
echo "PASS"
