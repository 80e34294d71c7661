#!/usr/bin/env bash
# --help shows a program's own flags first, not glog's; --helpshort shows
# them too (it printed nothing when the flags lived outside main's file);
# glog's stay reachable with --helpfull. Args: binaries, each with the file
# its own flags are defined in.
set -uo pipefail
fail() { echo "FAIL: $*"; exit 1; }
while [[ $# -ge 2 ]]; do
  bin="$1" own="$2"
  shift 2
  for flag in --help --helpshort; do
    out="$("${bin}" "${flag}" 2>&1)" || fail "${bin} ${flag} exited non-zero"
    first_flag="$(grep -m1 -E '^ +--[a-z]' <<<"${out}")"
    [[ -n "${first_flag}" ]] || fail "${bin} ${flag} lists no flag"
    grep -q "Flags from ${own}:" <<<"${out}" || fail "${bin} ${flag}: no flags from ${own}"
    # The first flag listed is the program's own, and glog's are absent.
    own_block="$(sed -n "/Flags from ${own//\//\\/}:/,/^\$/p" <<<"${out}")"
    grep -qF -- "${first_flag}" <<<"${own_block}" || fail "${bin} ${flag} starts with ${first_flag}"
    if grep -q -- '--logtostderr' <<<"${out}"; then fail "${bin} ${flag} lists glog's flags"; fi
    grep -q -- '--helpfull' <<<"${out}" || fail "${bin} ${flag} does not point at --helpfull"
  done
  # gflags' own listing (it exits 1 after printing).
  full="$("${bin}" --helpfull 2>&1)"
  grep -q 'logtostderr' <<<"${full}" || fail "${bin} --helpfull lost glog's flags"
done
echo PASS
