#!/usr/bin/env bash
# Feeds a binary bad flag values, as a new user would type them. Each must
# fail before any work: an exit status from 1 to 127 (no crash signal), a
# line naming the flag and the value, no stack trace, and no file written
# (every output path of the run points into an empty directory, which must
# stay empty).
# $1: the binary; $2: its kind (benchmark, kd_accuracy, byol_accuracy,
# codistill_accuracy, distilbert_accuracy, schedule); $3: algorithm options
# for a tiny model.
set -uo pipefail
bin="$1"
kind="$2"
opts="${3:-}"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
outdir="${tmp}/outputs"
mkdir -p "${outdir}"
log="${tmp}/log.txt"
# Runs from the output directory, so that a stray relative file shows too.
unset BUILD_WORKING_DIRECTORY
bin="$(cd "$(dirname "${bin}")" && pwd)/$(basename "${bin}")"

# Flags that every training binary shares (cli/flags.cc).
shared=(
  "--batch_size=-3|batch_size|-3"
  "--batch_size=0|batch_size|0"
  "--batch_size=abc|batch_size|abc"
  "--microbatches=0|microbatches|0"
  "--microbatches=-2|microbatches|-2"
  "--stages=0|stages|0"
  "--learning_rate=nan|learning_rate|nan"
  "--learning_rate=-1|learning_rate|-1"
  "--learning_rate=inf|learning_rate|inf"
  "--momentum=1.5|momentum|1.5"
  "--momentum=-0.1|momentum|-0.1"
  "--adam_eps=0|adam_eps|0"
  "--adam_betas=0.9|adam_betas|0.9"
  "--adam_betas=a,b|adam_betas|a,b"
  "--weight_decay=-1|weight_decay|-1"
  "--weight_decay=nan|weight_decay|nan"
  "--clip_grad_norm=-1|clip_grad_norm|-1"
  "--clip_grad_norm=inf|clip_grad_norm|inf"
  "--weight_decay_schedule=abc|weight_decay_schedule|abc"
  "--warmup_steps=-2|warmup_steps|-2"
  "--threads_per_device=0|threads_per_device|0"
  "--log_every=-1|log_every|-1"
  "--optimizer=rmsprop|optimizer|rmsprop"
  "--balance=a,b|balance|a,b"
  "--balance=-1,3|balance|-1,3"
  "--teacher_balance=x|teacher_balance|x"
  "--data_dir=/nonexistent/data|data_dir|/nonexistent/data"
  "--algorithm_options=no_such_option=1|algorithm_options|no_such_option"
  "--device=tpu|device|tpu"
  "--seed=twelve|seed|twelve"
  "--checkpoint_every=-1|checkpoint_every|-1"
  "--checkpoint_every=5|checkpoint_every|5"
  "--keep_checkpoints=0|keep_checkpoints|0"
  "--checkpoint_dir=/nonexistent/dir/ck|checkpoint_dir|/nonexistent/dir/ck"
  "--checkpoint_dir=/etc/passwd|checkpoint_dir|/etc/passwd"
  "--resume|resume|"
  "--export=/nonexistent/dir/s.safetensors|export|/nonexistent/dir/s.safetensors"
  "--export=${outdir}/student.pt|export|${outdir}/student.pt"
  "--export=${outdir}/.safetensors|export|${outdir}/.safetensors"
  "--no_such_flag=1|no_such_flag|"
)
accuracy=(
  "--steps=0|steps|0"
  "--train_samples=-1|train_samples|-1"
  "--eval_samples=-5|eval_samples|-5"
  "--report=/nonexistent/dir/r.md|report|/nonexistent/dir/r.md"
  "--report=${outdir}|report|${outdir}"
)
# A small ResNet exported by tspipe (//tests/golden:export): a weight file of
# another network than the benchmark's teacher.
other_weights="$(pwd)/tests/golden/kd_student.safetensors"
case "${kind}" in
  benchmark)
    common=(--scheduler=gpipe,sequential --stages=2 --microbatches=2 --batch_size=8 --balance=even
      --steps=1 --steps_per_iteration=1 --plot="${outdir}/plot.svg")
    cases=("${shared[@]}"
      "--plot=/nonexistent/dir/x.svg|plot|/nonexistent/dir/x.svg"
      "--plot=${outdir}|plot|${outdir}"
      "--trace=/nonexistent/dir/x.json|trace|/nonexistent/dir/x.json"
      "--trace=${outdir}|trace|${outdir}"
      "--steps=-1|steps|-1"
      "--steps_per_iteration=0|steps_per_iteration|0"
      "--balance_trials=0|balance_trials|0"
      "--scheduler=nope|scheduler|nope"
      "--scheduler=gpipe,,tspipe|scheduler|gpipe,,tspipe"
      "--data=imagenet|data|imagenet"
      "--policy=bogus|policy|bogus"
      "--backend=mpi|backend|mpi"
      "--peer_timeout=0|peer_timeout|0"
      "--emulate_link_ms_per_mb=-1|emulate_link_ms_per_mb|-1"
      "--backend=c10d --export=${outdir}/s.safetensors|export|${outdir}/s.safetensors"
      "--algorithm_options=student=resnet19|algorithm_options|resnet19"
      "--algorithm_options=teacher=vit_base_patch16,image_size=40|algorithm_options|patch size 16"
      "--algorithm_options=student=resnet50|algorithm_options|too small for resnet50"
      "--algorithm_options=image_size=0|algorithm_options|image_size"
      "--teacher_weights=/nonexistent/t.safetensors|teacher_weights|/nonexistent/t.safetensors"
      "--teacher_weights=${other_weights}|teacher_weights|missing"
      "--student_weights=${other_weights}|student_weights|missing"
      "--simulate_stages=8,x|simulate_stages|8,x"
      "--balance=even --simulate_stages=8|simulate_stages|balance=auto")
    ;;
  kd_accuracy)
    common=(--steps=1 --teacher_steps=1 --train_samples=64 --eval_samples=16 --batch_size=16
      --report="${outdir}/r.md" --teacher_checkpoint="${outdir}/teacher.pt")
    cases=("${shared[@]}" "${accuracy[@]}"
      "--teacher_steps=0|teacher_steps|0"
      "--scheduler=nope|scheduler|nope"
      "--teacher_scheduler=nope|teacher_scheduler|nope"
      "--teacher_checkpoint=/nonexistent/t.pt|teacher_checkpoint|/nonexistent/t.pt")
    ;;
  byol_accuracy)
    common=(--steps=1 --train_samples=64 --eval_samples=16 --batch_size=16 --report="${outdir}/r.md")
    cases=("${shared[@]}" "${accuracy[@]}"
      "--runs=gpipe|runs|gpipe"
      "--runs=nope:sync|runs|nope")
    ;;
  codistill_accuracy)
    common=(--steps=1 --train_samples=64 --eval_samples=16 --batch_size=16 --report="${outdir}/r.md")
    cases=("${shared[@]}" "${accuracy[@]}"
      "--link_ms_per_mb=a|link_ms_per_mb|a"
      "--link_ms_per_mb=0,-1|link_ms_per_mb|0,-1"
      "--codistill_weight_decay=nan|codistill_weight_decay|nan"
      "--scheduler=nope|scheduler|nope")
    ;;
  distilbert_accuracy)
    common=(--steps=1 --head_steps=1 --teacher_steps=1 --train_samples=32 --eval_samples=8
      --batch_size=8 --microbatches=2 --report="${outdir}/r.md" --head="${outdir}/head.safetensors"
      --teacher="${outdir}/teacher.safetensors")
    cases=("${shared[@]}" "${accuracy[@]}"
      "--head=/nonexistent/h.safetensors|head|/nonexistent/h.safetensors"
      "--teacher=/nonexistent/t.safetensors|teacher|/nonexistent/t.safetensors"
      "--head_steps=0|head_steps|0"
      "--head_learning_rate=nan|head_learning_rate|nan"
      "--teacher_steps=-1|teacher_steps|-1"
      "--scheduler=nope|scheduler|nope")
    ;;
  schedule)
    common=(--svg="${outdir}/t.svg")
    cases=(
      "--stages=0|stages|0"
      "--stages=-1|stages|-1"
      "--stages=abc|stages|abc"
      "--microbatches=0|microbatches|0"
      "--microbatches=-4|microbatches|-4"
      "--devices=-1|devices|-1"
      "--devices=two|devices|two"
      "--format=xml|format|xml"
      "--format=|format|"
      "--scheduler=nope|scheduler|nope"
      "--scheduler=|scheduler|"
      "--forward_cost=nan|forward_cost|nan"
      "--forward_cost=-1|forward_cost|-1"
      "--forward_cost=abc|forward_cost|abc"
      "--teacher_cost=inf|teacher_cost|inf"
      "--teacher_cost=-2|teacher_cost|-2"
      "--backward_cost=-1|backward_cost|-1"
      "--backward_cost=nan|backward_cost|nan"
      "--message_cost=-1|message_cost|-1"
      "--message_cost=nan|message_cost|nan"
      "--svg=/nonexistent/dir/t.svg|svg|/nonexistent/dir/t.svg"
      "--svg=${outdir}|svg|${outdir}"
      "--load_csv=/nonexistent/s.csv|load_csv|/nonexistent/s.csv"
      "--teacher=maybe|teacher|maybe"
      "--no_such_flag=1|no_such_flag|")
    ;;
  *) echo "unknown kind ${kind}"; exit 2 ;;
esac
# The runs start elsewhere than the runfiles, where the teacher is found.
if [[ "${kind}" == distilbert_accuracy && -z "${opts}" ]]; then
  opts="teacher_dir=$(pwd)/external/minilm/model"
fi
if [[ -n "${opts}" ]]; then common+=(--algorithm_options="${opts}"); fi

failures=0
for c in "${cases[@]}"; do
  IFS='|' read -r arg flag value <<<"${c}"
  rm -rf "${outdir:?}" && mkdir -p "${outdir}"  # Dot files too.
  read -r -a args <<<"${arg}"  # A case may be two flags ("--backend=c10d --export=...").
  (cd "${outdir}" && "${bin}" "${common[@]}" "${args[@]}") >"${log}" 2>&1 </dev/null
  rc=$?
  why=""
  if (( rc == 0 )); then
    why="accepted"
  elif (( rc >= 128 )); then
    why="crashed (exit ${rc})"
  elif grep -Eq 'Check failure|terminate called|Exception raised from|frame #[0-9]|Stack trace|\*\*\* (Aborted|SIGABRT|SIGSEGV)' "${log}"; then
    why="printed a stack trace"
  elif ! grep -F -- "${flag}" "${log}" | grep -Fq -- "${value}"; then
    why="no line names ${flag} and '${value}'"
  elif [[ -n "$(ls -A "${outdir}")" ]]; then
    why="wrote $(ls -A "${outdir}" | tr '\n' ' ')"
  fi
  if [[ -n "${why}" ]]; then
    echo "FAIL ${arg}: ${why}"
    sed 's/^/    /' "${log}" | tail -5
    failures=$((failures + 1))
  else
    echo "ok   ${arg}: $(grep -F -- "${flag}" "${log}" | grep -F -- "${value}" | head -1 | cut -c1-160)"
  fi
done
echo "${#cases[@]} bad inputs, ${failures} handled badly"
if (( ${#cases[@]} < 25 )); then echo "fewer than 25 cases"; exit 1; fi
if (( failures > 0 )); then exit 1; fi
echo PASS
