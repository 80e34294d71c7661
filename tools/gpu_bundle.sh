#!/usr/bin/env bash
# Packs what a GPU machine without Bazel needs to run tspipe's GPU checks:
# the --config=cuda binaries, the launcher, the few shared libraries that are
# neither LibTorch's nor the C library's (gflags and glog are linked in
# statically), and run.sh, which runs the checks there.
#
#   tools/gpu_bundle.sh [OUT_DIR] [--cpu]
#
# OUT_DIR defaults to gpu_bundle/ (git-ignored), so the device tool can carry
# it:  run(command="bash gpu_bundle/run.sh", carry=["gpu_bundle"]).
# run.sh puts the GPU machine's own torch/lib on LD_LIBRARY_PATH (the binaries
# link LibTorch dynamically and find CUDA, cuDNN and NCCL through it) and
# writes logs and figures to $OUT.
#
# --cpu builds without --config=cuda instead: `DEVICE=cpu bash
# OUT_DIR/run.sh` then runs the same commands on this machine, a check of
# the bundle itself.
set -euo pipefail
cd "$(dirname "$0")/.."

out="gpu_bundle"
config="--config=cuda"
for arg in "$@"; do
  case "${arg}" in
    --cpu) config="" ;;
    -*) echo "unknown option ${arg}" >&2; exit 2 ;;
    *) out="${arg}" ;;
  esac
done

binaries=(
  benchmarks/kd
  benchmarks/byol
  benchmarks/mocov3
  backends/c10d/c10d_test
)
targets=()
for b in "${binaries[@]}"; do targets+=("//${b%/*}:${b##*/}"); done
# shellcheck disable=SC2086  # ${config} is empty or one word.
./tools/bazel build ${config} "${targets[@]}"

# Built beside the destination and renamed when complete: an interrupted run
# leaves no half-filled bundle behind.
tmp="${out}.partial"
rm -rf "${tmp}"
mkdir -p "${tmp}/bin" "${tmp}/lib"
for b in "${binaries[@]}"; do
  cp -L "bazel-bin/${b}" "${tmp}/bin/"
done
cp tools/launch "${tmp}/bin/launch"

# Libraries to carry: everything the binaries load except LibTorch (the GPU
# machine has its own, with CUDA) and glibc (it cannot be swapped under a
# running loader). libstdc++ and libgcc_s come along: they are backward
# compatible, and the GPU machine's may be older than Debian 12's.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so|libtorch|libc10|libcudart|libcupti|libgomp|libcuda\.so|libnccl|libcudnn|libcublas|libnvrtc|libshm)'
for b in "${tmp}"/bin/*; do
  [[ -x "${b}" && "${b##*/}" != launch ]] || continue
  ldd "${b}" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if ! [[ "${name}" =~ ${skip} ]]; then
    cp -L "${path}" "${tmp}/lib/${name}"
  fi
done

cat >"${tmp}/run.sh" <<'EOF'
#!/usr/bin/env bash
# tspipe GPU checks (written by tools/gpu_bundle.sh). On the GPU machine:
#   bash gpu_bundle/run.sh            (logs and figures go to $OUT)
# DEVICE=cpu runs the same commands on the CPU (a check of the bundle).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
device="${DEVICE:-cuda}"
out="${OUT:-${here}/out}"
mkdir -p "${out}"
torch_lib="${TORCH_LIB:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}"
export LD_LIBRARY_PATH="${here}/lib:${torch_lib}:/lib:/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
status=0
step() {  # step NAME COMMAND...: runs it, its output to $OUT/NAME.log
  local name="$1"; shift
  echo "=== ${name}: $*"
  "$@" 2>&1 | tee "${out}/${name}.log"
  local rc=${PIPESTATUS[0]}
  echo "=== ${name}: exit ${rc}"
  [[ ${rc} == 0 ]] || status=1
}
if [[ "${device}" == cuda ]]; then
  nvidia-smi >"${out}/nvidia-smi.txt" 2>&1 || true
  single="cuda:0"
else
  single="cpu"
fi
# Equivalence on the GPU (skipped without one): the single-process backend
# on cuda:0, a world-size-1 NCCL group, NCCL processes when 2 GPUs exist.
step c10d_test "${here}/bin/c10d_test" --gtest_filter='C10dCudaTest.*:C10dWorldOfOneTest.*'
# The README's comparison, single process, every rank on one device.
step kd_single_process "${here}/bin/kd" --scheduler=all --stages=2 --microbatches=4 \
  --device="${single}" --plot="${out}/kd_single_process.svg" ${KD_ARGS:-}
# The same KD through the c10d backend with a world of one (NCCL on GPUs).
step kd_c10d_world1 python3 "${here}/bin/launch" --nproc_per_node=1 --grace=10 -- \
  "${here}/bin/kd" --backend=c10d --device="${device%%:*}" --scheduler=sequential \
  --stages=2 --microbatches=4 --steps=20 ${KD_ARGS:-}
echo "logs in ${out}"
exit ${status}
EOF
chmod +x "${tmp}/run.sh"
rm -rf "${out}"
mv "${tmp}" "${out}"
du -sh "${out}"
ls "${out}/bin" "${out}/lib"
