#!/usr/bin/env bash
# The launcher: torchrun's environment per rank, prefixed output, failure
# propagation, and a real 2-process c10d benchmark through it.
set -euo pipefail
launch="$1"
kd="$2"
blockwise="$3"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
out="${tmp}/out.txt"

"${launch}" --nproc_per_node=3 --master_port=29555 -- \
  sh -c 'echo "env $RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT"' >"${out}"
for r in 0 1 2; do
  grep -qx "\[rank ${r}\] env ${r} ${r} 3 127.0.0.1 29555" "${out}"
done

# Second node of two: global ranks 2 and 3.
"${launch}" --nnodes=2 --node_rank=1 --nproc_per_node=2 --master_addr=10.0.0.1 -- \
  sh -c 'echo "env $RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR"' >"${out}"
grep -qx '\[rank 2\] env 2 0 4 10.0.0.1' "${out}"
grep -qx '\[rank 3\] env 3 1 4 10.0.0.1' "${out}"

# A failing rank: the launcher reports it, stops the straggler after the
# grace period and exits with the failing rank's status.
start=$(date +%s)
set +e
"${launch}" --nproc_per_node=2 --grace=1 -- \
  sh -c 'if [ "$RANK" = 1 ]; then exit 3; fi; sleep 100' >"${out}" 2>&1
status=$?
set -e
[[ ${status} == 3 ]] || { cat "${out}"; echo "status ${status}, want 3"; exit 1; }
(( $(date +%s) - start < 30 )) || { echo "straggler not stopped"; exit 1; }
grep -q 'rank 1 exited with status 3' "${out}"
grep -q 'terminating rank 0' "${out}"

# The KD benchmark over c10d with one process per stage.
port=$((20000 + RANDOM % 20000))
kd_args=(--scheduler=tspipe,gpipe --stages=2 --microbatches=2 --batch_size=8
         --algorithm_options=widths=4,8,blocks=1,1,teacher_widths=8,8,teacher_blocks=1,1
         --balance=2,2
         --teacher_balance=1,3 --steps=2 --steps_per_iteration=2 --log_every=0
         --benchmark_repetitions=1)
"${launch}" --nproc_per_node=2 --master_port="${port}" -- "${kd}" --backend=c10d \
  "${kd_args[@]}" >"${out}" 2>&1 || { cat "${out}"; exit 1; }
cat "${out}"
grep -Eq '^\[rank 0\] tspipe +2 ' "${out}"
grep -Eq '^\[rank 1\] gpipe +2 ' "${out}"

# Every rank reports the loss of the whole mini-batch (summed over the
# processes), the loss the single-process run of the same steps reports.
"${kd}" "${kd_args[@]}" >"${tmp}/local.txt" 2>&1 || { cat "${tmp}/local.txt"; exit 1; }
loss() {  # loss FILE PREFIX SCHEDULER: the loss column of the scheduler's row.
  sed -e 's/\x1b\[[0-9;]*m//g' "$1" |
    awk -v p="$2" -v s="train/$3/" '
      # Rows have two fields more than the header before the counters
      # (time and CPU come with their units).
      index($0, p) == 1 && / Iterations / { for (i = 1; i <= NF; ++i) if ($i == "loss") col = i + 2 }
      col && index($0, p s) == 1 { print $col }'
}
want="$(loss "${tmp}/local.txt" "" tspipe)"
[[ -n "${want}" && "${want}" != 0 ]] || { cat "${tmp}/local.txt"; echo "no local loss"; exit 1; }
for r in 0 1; do
  got="$(loss "${out}" "[rank ${r}] " tspipe)"
  [[ "${got}" == "${want}" ]] || { echo "rank ${r} reports loss '${got}', single process ${want}"; exit 1; }
done

# Blockwise distillation over c10d, against one process: pipebd with one
# micro-batch (replicas impossible, so each process runs a run of blocks and
# the teacher activations are relayed between processes), and dp (every
# process a replica of every block, gradients all-reduced).
for sched_m in pipebd:1 dp:4; do
  sched="${sched_m%%:*}"
  m="${sched_m##*:}"
  bw_args=(--scheduler="${sched}" --stages=2 --microbatches="${m}" --batch_size=8
           --algorithm_options=teacher_widths=4,8,teacher_blocks=1,1 --steps=2 --steps_per_iteration=2
           --log_every=0 --benchmark_repetitions=1)
  "${blockwise}" "${bw_args[@]}" >"${tmp}/bw_local.txt" 2>&1 || { cat "${tmp}/bw_local.txt"; exit 1; }
  port=$((20000 + RANDOM % 20000))
  "${launch}" --nproc_per_node=2 --master_port="${port}" -- "${blockwise}" --backend=c10d \
    "${bw_args[@]}" >"${out}" 2>&1 || { cat "${out}"; exit 1; }
  if [[ ${sched} == pipebd ]]; then  # Groups of one: blocks 0.. on rank 0, the rest on rank 1.
    grep -Eq '\[rank 0\] .*pipebd: ranks per stage 0(;0)*(;1)+$' "${out}" ||
      { cat "${out}"; echo "pipebd: expected a run of blocks per process"; exit 1; }
  fi
  want="$(loss "${tmp}/bw_local.txt" "" "${sched}")"
  [[ -n "${want}" ]] || { cat "${tmp}/bw_local.txt"; echo "no local ${sched} loss"; exit 1; }
  for r in 0 1; do
    got="$(loss "${out}" "[rank ${r}] " "${sched}")"
    [[ "${got}" == "${want}" ]] ||
      { cat "${out}"; echo "${sched}: rank ${r} loss '${got}', single process ${want}"; exit 1; }
  done
done
echo PASS
