#!/usr/bin/env bash
# Builds every libFuzzer target (tests/fuzz/*_fuzz.cc) with clang++ and
# ASan/UBSan into build-fuzz/, runs each for SECONDS (default 60) seeded from a
# scratch copy of tests/fuzz/<target>_corpus/ (so the repository's corpus never
# grows), and fails if any target finds a crash, leak, timeout or OOM.
#
# Usage: scripts/fuzz.sh [SECONDS]        (make fuzz FUZZ_SECONDS=N)
# Environment: FUZZ_TARGETS="policy audit" limits the targets; CXX_FUZZ picks
# the compiler (default clang++); FUZZ_JOBS the parallel compile jobs.
#
# Findings land in build-fuzz/artifacts/<target>/ (crash-*, leak-*, ...);
# reproduce one with build-fuzz/<target>_fuzz FILE, or with the g++ replayer:
# make build/fuzz/<target>_replay && build/fuzz/<target>_replay FILE.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: $0 [SECONDS]  (a positive number of seconds per target)" >&2
  exit 2
fi

cd "$(dirname "$0")/.."
out=build-fuzz
cxx="${CXX_FUZZ:-clang++}"
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 4)}"

if ! command -v "$cxx" >/dev/null; then
  echo "fuzz.sh: $cxx not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi

# The same flags and libraries as the Makefile (CPPFLAGS, LDLIBS), minus fuse3:
# the fuzz targets only link policy/ and the proxy's wire parsers. yaml-cpp is built with g++/libstdc++,
# which clang++ also uses by default on Debian.
bssl_inc=/usr/include/android
bssl_lib=/usr/lib/x86_64-linux-gnu/android
pkgs="yaml-cpp spdlog libidn2"
# shellcheck disable=SC2207
pkg_cflags=($(pkg-config --cflags $pkgs))
# shellcheck disable=SC2207
pkg_libs=($(pkg-config --libs $pkgs))
cppflags=(-I. -isystem "$bssl_inc" -DSPDLOG_FMT_EXTERNAL "${pkg_cflags[@]}" -DGUARD_FUZZING)
san=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
cxxflags=(-std=c++20 -O1 -g -pthread -Wall -Wextra "${san[@]}")
ldlibs=("${pkg_libs[@]}" -L"$bssl_lib" -Wl,-rpath,"$bssl_lib" -lcrypto -pthread)

mkdir -p "$out/obj/policy"

# The embedded default policy, as the Makefile generates it.
if [ ! -e "$out/obj/policy/default_policy.cc" ] ||
   [ policy/default.yaml -nt "$out/obj/policy/default_policy.cc" ] ||
   [ scripts/embed.sh -nt "$out/obj/policy/default_policy.cc" ]; then
  scripts/embed.sh policy/default.yaml guard::policy kDefaultPolicyYaml \
    > "$out/obj/policy/default_policy.cc"
fi

# Library objects: instrumented for coverage (fuzzer-no-link). An object is
# rebuilt when its source, any policy/ header or this script is newer; a
# failed compile leaves no object behind.
newest_dep=$(ls -t policy/*.h mitm-proxy/*.h scripts/fuzz.sh | head -n1)
objs=()
for src in policy/*.cc mitm-proxy/dns.cc mitm-proxy/sni.cc mitm-proxy/http.cc \
           "$out/obj/policy/default_policy.cc"; do
  obj="$out/obj/policy/$(basename "${src%.cc}").o"
  objs+=("$obj")
  if [ -e "$obj" ] && [ "$obj" -nt "$src" ] && [ "$obj" -nt "$newest_dep" ]; then
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  echo "fuzz.sh: compiling $src"
  rm -f "$obj"
  { "$cxx" "${cppflags[@]}" "${cxxflags[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj.tmp" &&
      mv "$obj.tmp" "$obj"; } || echo "fuzz.sh: compiling $src failed" >&2 &
done
wait || true
build_failed=0
for obj in "${objs[@]}"; do
  [ -e "$obj" ] || build_failed=1
done
if [ "$build_failed" -ne 0 ]; then
  echo "fuzz.sh: building policy/ with $cxx failed" >&2
  exit 1
fi

targets=()
if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<< "$FUZZ_TARGETS"
else
  for f in tests/fuzz/*_fuzz.cc; do
    n=$(basename "$f" _fuzz.cc)
    targets+=("$n")
  done
fi
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets in tests/fuzz/" >&2
  exit 1
fi

for t in "${targets[@]}"; do
  bin="$out/${t}_fuzz"
  if [ ! -e "$bin" ] || [ "tests/fuzz/${t}_fuzz.cc" -nt "$bin" ] ||
     [ -n "$(find "${objs[@]}" -newer "$bin" 2>/dev/null | head -n1)" ]; then
    echo "fuzz.sh: linking $bin"
    "$cxx" "${cppflags[@]}" "${cxxflags[@]}" -fsanitize=fuzzer "tests/fuzz/${t}_fuzz.cc" \
      "${objs[@]}" -o "$bin" "${ldlibs[@]}"
  fi
done

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

status=0
summary=()
for t in "${targets[@]}"; do
  bin="$out/${t}_fuzz"
  corpus="tests/fuzz/${t}_corpus"
  if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
    echo "fuzz.sh: $corpus is missing or empty" >&2
    status=1
    continue
  fi
  scratch="$out/corpus/$t"
  artifacts="$out/artifacts/$t"
  log="$out/$t.log"
  rm -rf "$scratch" "$artifacts"
  mkdir -p "$scratch" "$artifacts"
  cp -p "$corpus"/* "$scratch"/
  echo "fuzz.sh: running $t for ${seconds}s (log: $log)"
  rc=0
  "$bin" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=30 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$scratch" > "$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  found=$(find "$artifacts" -type f | sort)
  if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
    status=1
    summary+=("$t: FAILED (exit $rc, ${execs:-?} execs)")
    echo "fuzz.sh: $t FAILED (exit $rc); excerpt of $log:" >&2
    { grep -E -m 20 -A 12 'ERROR: |runtime error|property failed|SUMMARY' "$log" ||
        tail -n 40 "$log"; } | cut -c1-240 >&2
    for f in $found; do
      echo "fuzz.sh: reproducer: $f (replay: $bin $f)" >&2
    done
  else
    summary+=("$t: ok (${execs:-?} execs, corpus $(ls "$scratch" | wc -l) inputs)")
  fi
done

echo "fuzz.sh: summary (${seconds}s per target):"
for s in "${summary[@]}"; do
  echo "  $s"
done
exit "$status"
