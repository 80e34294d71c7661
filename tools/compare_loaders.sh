#!/usr/bin/env bash
# tspipe's image-folder loader (//benchmarks:image_loader) against PyTorch's
# DataLoader with torchvision's transforms (tools/torch_loader_bench.py) on
# the same folder, image size, transforms and worker count, interleaved
# round by round so both see the same machine state.
#
#   tools/compare_loaders.sh ROOT [ROUNDS=3] [BATCHES=10] [WORKERS=2]
#
# ROOT: an ImageFolder tree (tools/make_image_folder.py writes one). Needs
# the venv of tools/torch_loader_bench.py and a built
# bazel-bin/benchmarks/image_loader. Prints each run's line, then per mode
# the median images/s of each and their ratio.
set -euo pipefail
root="${1:?usage: compare_loaders.sh ROOT [ROUNDS] [BATCHES] [WORKERS]}"
rounds="${2:-3}"
batches="${3:-10}"
workers="${4:-2}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${TSPIPE_VENV:-${HOME}/.cache/tspipe/pytorch-venv}/bin/python"
bin="${here}/bazel-bin/benchmarks/image_loader"
[[ -x "${py}" ]] || { echo "compare_loaders: no ${py} (see tools/torch_loader_bench.py)" >&2; exit 2; }
[[ -x "${bin}" ]] || { echo "compare_loaders: build //benchmarks:image_loader first" >&2; exit 2; }
out="$(mktemp)"
trap 'rm -f "${out}"' EXIT
for ((r = 1; r <= rounds; ++r)); do
  for mode in train byol eval; do
    "${py}" "${here}/tools/torch_loader_bench.py" "${root}" --mode "${mode}" \
      --workers "${workers}" --batches "${batches}" --warmup 2 2>/dev/null | tee -a "${out}"
    "${bin}" --data_dir="${root}" --mode="${mode}" --data_threads="${workers}" \
      --batches="${batches}" --warmup=2 | tee -a "${out}"
  done
done
python3 - "${out}" <<'PY'
import re, statistics, sys
rates = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+)_loader mode=(\w+) .*images_per_second=([\d.]+)", line)
    if m:
        rates.setdefault((m.group(2), m.group(1)), []).append(float(m.group(3)))
print(f"{'mode':6} {'torch img/s':>12} {'tspipe img/s':>13} {'tspipe/torch':>13}")
for mode in ("train", "byol", "eval"):
    t = statistics.median(rates[(mode, "torch")])
    s = statistics.median(rates[(mode, "tspipe")])
    print(f"{mode:6} {t:12.1f} {s:13.1f} {s / t:13.2f}")
PY
