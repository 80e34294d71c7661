#!/usr/bin/env bash
# Makes the golden files of //engine:export_test: a KD student and a BYOL
# online network, each trained for a few steps on synthetic data by the
# benchmark binaries and written with --export (tspipe's own exporter), then
# loaded by tools/pytorch_forward.py into the same network written in plain
# PyTorch (strict load_state_dict), which records its input and outputs.
#
#   python3 -m venv ~/.cache/tspipe/pytorch-venv
#   ~/.cache/tspipe/pytorch-venv/bin/pip install torch==2.11.0 safetensors numpy
#   tools/make_export_goldens.sh      # PYTHON=... to use another interpreter
#
# The shapes must stay those of engine/export_test.cc.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-${HOME}/.cache/tspipe/pytorch-venv/bin/python}"
golden=tests/golden
shape="widths=8,16,blocks=2,1"
./tools/bazel build //benchmarks:kd //benchmarks:byol
common=(--scheduler=tspipe --stages=2 --microbatches=2 --batch_size=16 --balance=even
        --steps=2 --steps_per_iteration=2 --benchmark_repetitions=1 --benchmark_min_time=0.01
        --log_every=0)
bazel-bin/benchmarks/kd "${common[@]}" --export="${golden}/kd_student.safetensors" \
  --algorithm_options="${shape},teacher_widths=8,16,teacher_blocks=1,1"
bazel-bin/benchmarks/byol "${common[@]}" --export="${golden}/byol_student.safetensors" \
  --algorithm_options="${shape},hidden=32,projection=16"
"${python}" tools/pytorch_forward.py "${golden}/kd_student.safetensors" --model=resnet \
  --widths=8,16 --blocks=2,1 --golden="${golden}/kd_student_pytorch_forward.safetensors"
"${python}" tools/pytorch_forward.py "${golden}/byol_student.safetensors" --model=byol \
  --widths=8,16 --blocks=2,1 --hidden=32 --projection=16 \
  --golden="${golden}/byol_student_pytorch_forward.safetensors"
