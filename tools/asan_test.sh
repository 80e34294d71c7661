#!/usr/bin/env bash
# Runs tests under --config=asan (AddressSanitizer, UndefinedBehaviorSanitizer,
# LeakSanitizer; see .bazelrc). With no arguments: the core, scheduler and
# executor tests, the readers and file formats that once lived in core/, and
# the image decoders and threaded loader, as CI does. Any other targets or bazel flags may be given:
#   tools/asan_test.sh //engine:checkpoint_test
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if (( $# == 0 )); then
  set -- //core/... //schedulers/... //data:idx_test //data:text_test //data:image_folder_test \
    //io/... \
    //backends:executor_test //backends:kd_equivalence_test //backends:split_backward_test \
    //backends:loss_weights_test
fi
# The suppressions need an absolute path, which .bazelrc cannot spell.
exec "${root}/tools/bazel" test --config=asan \
  --test_env=LSAN_OPTIONS="suppressions=${root}/tools/sanitizers/lsan.supp:print_suppressions=0" \
  "$@"
