#!/usr/bin/env bash
# Two "nodes" on one machine: two network namespaces joined by a veth pair,
# each with its own address and no route between their loopbacks. One
# launcher per node (--nnodes=2, --node_rank, --master_addr = node 0's
# address) runs the KD benchmark over c10d with one rank per node, as on two
# hosts. This is what breaks when a rank listens on 127.0.0.1 (what this
# machine's hostname resolves to) instead of the interface that reaches the
# master.
#
# Needs root (CAP_NET_ADMIN) for `ip netns`; prints SKIPPED and passes where
# namespaces cannot be made (the rest of the c10d backend is tested by
# //backends/c10d:c10d_test and //tools:launch_test).
set -euo pipefail
launch="$(realpath "$1")"
kd="$(realpath "$2")"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"

id="$$"
node0="tsp${id}a"
node1="tsp${id}b"
net="10.$((20 + RANDOM % 200)).$((RANDOM % 250))"
cleanup() {
  ip netns del "${node0}" 2>/dev/null || true
  ip netns del "${node1}" 2>/dev/null || true
}
trap cleanup EXIT

if ! command -v ip >/dev/null || ! ip netns add "${node0}" 2>"${tmp}/netns.err"; then
  echo "SKIPPED: cannot create network namespaces here: $(cat "${tmp}/netns.err" 2>/dev/null)"
  exit 0
fi
ip netns add "${node1}"
ip link add "v${id}a" type veth peer name "v${id}b"
ip link set "v${id}a" netns "${node0}"
ip link set "v${id}b" netns "${node1}"
ip -n "${node0}" addr add "${net}.1/24" dev "v${id}a"
ip -n "${node1}" addr add "${net}.2/24" dev "v${id}b"
for n in "${node0}" "${node1}"; do
  ip -n "${n}" link set lo up
done
ip -n "${node0}" link set "v${id}a" up
ip -n "${node1}" link set "v${id}b" up

port=$((20000 + RANDOM % 20000))
args=(--backend=c10d --scheduler=tspipe,dp --stages=2 --microbatches=2 --batch_size=8
      --algorithm_options=widths=4,8,blocks=1,1,teacher_widths=8,8,teacher_blocks=1,1 --steps=2
      --steps_per_iteration=2 --log_every=0 --peer_timeout=30)
start=$(date +%s)
for node in 0 1; do
  ns="${node0}"
  [[ ${node} == 1 ]] && ns="${node1}"
  # No GLOO_SOCKET_IFNAME: each rank must find its interface by itself.
  env -u GLOO_SOCKET_IFNAME ip netns exec "${ns}" "${launch}" --nnodes=2 --node_rank="${node}" \
    --nproc_per_node=1 --master_addr="${net}.1" --master_port="${port}" --grace=5 -- \
    "${kd}" "${args[@]}" >"${tmp}/node${node}.log" 2>&1 &
  pids[node]=$!
done
status=0
for node in 0 1; do
  wait "${pids[node]}" || { status=1; echo "node ${node} failed:"; cat "${tmp}/node${node}.log"; }
done
[[ ${status} == 0 ]] || exit 1
# Rank 0 (node 0) and rank 1 (node 1) both report both schedulers.
for node in 0 1; do
  for s in tspipe dp; do
    grep -Eq "^\[rank ${node}\] ${s} +2 " "${tmp}/node${node}.log" ||
      { cat "${tmp}/node${node}.log"; echo "node ${node}: no ${s} row"; exit 1; }
  done
done
echo "two nodes (${net}.1, ${net}.2): KD over c10d passed in $(( $(date +%s) - start )) s"
