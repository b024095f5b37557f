#!/usr/bin/env bash
# Fuzz every parser that sees outside input (fuzz/README.md), each target for a while.
#
#   e2e/fuzz.sh [seconds-per-target] [target...]    default: 600 s, every target
#   e2e/fuzz.sh --cmin [target...]                  fold fuzz/corpus-work into fuzz/corpus, minimised
#
# Each target runs as one libFuzzer process (one job) seeded from fuzz/corpus/<target>; new
# inputs go to fuzz/corpus-work/<target> (git-ignored), so the checked-in corpus changes only
# with --cmin. Builds with debug assertions and overflow checks (`cargo fuzz -a`), runs with
# -rss_limit_mb=2048 (an input that makes a target allocate more is a finding too) and prints,
# per target: seconds, executions, exec/s, cov and ft (libFuzzer's final stats) and findings.
# A crash, leak, timeout or out-of-memory input is copied to fuzz/regressions/<target>/ (the
# replay test runs it from then on) and the script exits 1.
#
# Environment: FUZZ_PARALLEL (targets at a time, default 1), FUZZ_TOOLCHAIN (default nightly),
# FUZZ_TARGET_DIR (default fuzz/target), FUZZ_RSS_MB (default 2048).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
toolchain=${FUZZ_TOOLCHAIN:-nightly}
target_dir=${FUZZ_TARGET_DIR:-$root/fuzz/target}
parallel=${FUZZ_PARALLEL:-1}
rss_mb=${FUZZ_RSS_MB:-2048}
logs=$root/fuzz/logs
fuzz() { cargo "+$toolchain" fuzz "$@"; }

all_targets() { sed -n 's/^name = "\([a-z_]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^ipfs-image'; }

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

cmin=0
if [[ ${1:-} == --cmin ]]; then
  cmin=1
  shift
  seconds=0
else
  seconds=${1:-600}
  shift || true
fi
if [[ $# -gt 0 ]]; then targets=("$@"); else mapfile -t targets < <(all_targets); fi
for t in "${targets[@]}"; do
  [[ -f fuzz/fuzz_targets/$t.rs ]] || { echo "no such target: $t (have: $(all_targets | tr '\n' ' '))" >&2; exit 2; }
done

echo "building ${#targets[@]} targets (debug assertions on)" >&2
# `cargo fuzz build` builds one target, or all of them without a name.
if [[ $# -gt 0 ]]; then
  for t in "${targets[@]}"; do fuzz build -a --target-dir "$target_dir" "$t" >&2; done
else
  fuzz build -a --target-dir "$target_dir" >&2
fi
mkdir -p "$logs"

if [[ $cmin == 1 ]]; then
  for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus-work/$t"
    cp -n "fuzz/corpus-work/$t"/* "fuzz/corpus/$t"/ 2>/dev/null || true
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    fuzz cmin -a --target-dir "$target_dir" "$t" "fuzz/corpus/$t" -- -rss_limit_mb="$rss_mb" >"$logs-cmin-$t.log" 2>&1 \
      || { echo "cmin $t failed, see $logs-cmin-$t.log" >&2; exit 1; }
    echo "$t: $before → $(find "fuzz/corpus/$t" -type f | wc -l) files, $(du -sk "fuzz/corpus/$t" | cut -f1) KiB"
  done
  exit 0
fi

run_one() {
  local t=$1 log=$logs/$t.log
  mkdir -p "fuzz/corpus-work/$t" "fuzz/artifacts/$t"
  local started=$SECONDS
  # Exit status: libFuzzer's (non-zero on a finding); the artifacts tell which.
  fuzz run -a --target-dir "$target_dir" "$t" "fuzz/corpus-work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=30 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || true
  echo $((SECONDS - started)) >"$log.seconds"
}

running=0
for t in "${targets[@]}"; do
  echo "fuzzing $t for ${seconds}s (log: fuzz/logs/$t.log)" >&2
  rm -f "$logs/$t.log"
  run_one "$t" &
  running=$((running + 1))
  if [[ $running -ge $parallel ]]; then wait -n; running=$((running - 1)); fi
done
wait

found_any=0
printf '%-16s %7s %12s %8s %6s %7s  %s\n' target seconds execs exec/s cov ft findings
for t in "${targets[@]}"; do
  log=$logs/$t.log
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  found=()
  for f in "fuzz/artifacts/$t"/*; do
    [[ -f $f ]] || continue
    mkdir -p "fuzz/regressions/$t"
    cp "$f" "fuzz/regressions/$t/"
    found+=("$(basename "$f")")
  done
  rm -rf "fuzz/artifacts/$t"
  if [[ ${#found[@]} -gt 0 ]]; then
    found_any=1
    findings="FOUND ${found[*]} → fuzz/regressions/$t/"
  elif grep -q '^==[0-9]*==\|panicked at' "$log"; then
    found_any=1
    findings="FAILED without an artifact, see fuzz/logs/$t.log"
  else
    findings=none
  fi
  printf '%-16s %7s %12s %8s %6s %7s  %s\n' "$t" "$(cat "$log.seconds")" \
    "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "${cov:-?}" "${ft:-?}" "$findings"
done
exit $found_any
