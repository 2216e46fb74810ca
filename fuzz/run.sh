#!/usr/bin/env bash
# Run each libFuzzer target for a bounded time, one after the other (one core).
#   fuzz/run.sh SECONDS [target ...]      (default: all targets; `make fuzz FUZZ_SECONDS=60` calls this)
# The committed seeds (fuzz/corpus/<target>, read-only) start a working corpus in fuzz/build/work/<target>,
# which persists between runs; crashes go to fuzz/build/findings/<target>/. Exit 1 on the first crash.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(audio_file tekken pcm_stdin)
export LSAN_OPTIONS="suppressions=$PWD/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
for t in "${targets[@]}"; do
  bin=build/fuzz_$t
  [ -x "$bin" ] || { echo "missing $bin: run make fuzz-build" >&2; exit 2; }
  mkdir -p "build/work/$t" "build/findings/$t"
  extra=()
  case $t in
    audio_file) extra=(-max_len=16384) ;;
    tekken) extra=(-max_len=8192 -dict=tekken.dict) ;;
    pcm_stdin) extra=(-max_len=8192) ;;
  esac
  echo "== fuzz_$t for ${secs}s"
  if ! nice -n 19 "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="build/findings/$t/" "${extra[@]}" "build/work/$t" "corpus/$t" 2>"build/$t.log"; then
    tail -n 60 "build/$t.log" >&2
    echo "fuzz_$t: crash; input in fuzz/build/findings/$t/ (log fuzz/build/$t.log)" >&2
    exit 1
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done)" "build/$t.log" || tail -n 3 "build/$t.log"
done
