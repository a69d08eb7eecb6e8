#!/usr/bin/env bash
# Host-mode benchmark: the same workloads run natively, under bubblewrap and
# under guard, in one run, interleaved, and reported as ratios.
#
#   bench/host/run.sh            full run (bench/host/RESULTS-host.md; 3 min idle, up to 9 loaded)
#   bench/host/run.sh --smoke    tiny sizes, one iteration each (CI; about 20 s)
#
# Options:
#   --guard BIN     the guard binary (default build/guard of this checkout)
#   --guard-flags F guard's options before --policy (default none: read-only
#                   system trees are bound, the project is served by the view;
#                   "--audit-allowed none --bind-writable" binds the project too)
#   --runs N        iterations of every workload but startup (default 3; smoke 1)
#   --only-startup  only the startup workload (no inputs generated; about 30 s):
#                   the same startup row and ratios as a full run
#   --strict        exit 1 when a target is missed (default: only on failures)
#   --keep          keep the work directory (printed on stderr)
#   --nofile N      raise the open-file limit (ulimit -n) to N for every mode
#                   first (root may raise the hard limit); guard's view holds
#                   one descriptor per inode the kernel caches, so a tree
#                   larger than the limit fails with EMFILE under guard
#
# Workloads (sizes: full / smoke):
#   startup    `true` in the sandbox (hyperfine, median)
#   metadata   find TREE -type f | xargs stat   over 50,000 / 2,000 files
#              (full mode also over the first 10,000 of the 50,000)
#   git status on a repository of 5,000 / 500 committed files
#   seq I/O    dd bs=1M of 1 GiB / 64 MiB: write (conv=fsync), read right
#              after the write in the same session, and read of a file
#              written natively before the session (host page cache warm
#              in both reads: dropping caches is not possible in a container)
#   build      make -j2 of a generated 40 / 10-file C project (cleaned before each run)
#
# The sandboxes get comparable access: /usr, /bin, /sbin, /lib, /lib64, /etc
# and /opt read-only, the project directory and ~/.cache read-write, private
# /tmp, /proc and /dev, no network (guard: bench/host/policy.yaml; bwrap:
# --unshare-all with the matching binds). Every workload is timed inside the
# sandbox (bash $EPOCHREALTIME around the command), so sandbox startup is
# counted once, in its own row. Exit status: 1 if any workload failed in any
# sandbox (or, with --strict, missed its target), else 0.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)

smoke=0
only_startup=0
runs=
strict=0
keep=0
nofile=
guard_src="$repo_root/build/guard"
guard_flags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --full) smoke=0 ;;
    --runs) runs=$2; shift ;;
    --only-startup) only_startup=1 ;;
    --guard) guard_src=$2; shift ;;
    --guard-flags) guard_flags=$2; shift ;;
    --strict) strict=1 ;;
    --keep) keep=1 ;;
    --nofile) nofile=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$smoke" = 1 ]; then
  meta_files=2000; git_files=500; io_mib=64; c_sources=10
  runs=${runs:-1}; su_rounds=1; su_runs=3; su_warmup=1
else
  meta_files=50000; git_files=5000; io_mib=1024; c_sources=40
  runs=${runs:-3}; su_rounds=3; su_runs=10; su_warmup=3
fi

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }

# ---- prerequisites ------------------------------------------------------------

[ -x "$guard_src" ] || die "no guard binary at $guard_src (run make first, or pass --guard)"
for t in bwrap python3 git make cc dd find xargs stat; do
  command -v "$t" >/dev/null || die "$t is missing (scripts/install-deps.sh installs it)"
done
[ -c /dev/fuse ] || die "/dev/fuse is missing: guard needs FUSE"
have_hyperfine=0
command -v hyperfine >/dev/null && have_hyperfine=1
if [ -n "$nofile" ]; then
  ulimit -Hn "$nofile" 2>/dev/null || true
  ulimit -n "$nofile" || die "cannot raise the open-file limit to $nofile"
fi

# The project lives outside /tmp: both sandboxes mount a private /tmp.
work=$(mktemp -d /var/tmp/guard-bench-XXXXXX)
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ "$keep" = 1 ]; then
    log "kept $work"
  elif findmnt -rn -o TARGET | grep -q "^$work"; then
    # Never recurse into a mount left behind: it may be a bind of host files.
    log "not removing $work: something is mounted below it"
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT
proj="$work/project"
mkdir -p "$proj"
# A private copy: a rebuild during the run must not change the binary measured.
guard="$work/guard"
cp "$guard_src" "$guard"
# guard serves the preload shim that sits next to it.
cp "$(dirname "$guard_src")/libguard-interpose.so" "$work/"
policy="$here/policy.yaml"
audit="$work/audit.jsonl"

export LC_ALL=C
base_env=(PATH="$PATH" HOME="$HOME" LC_ALL=C)
[ -n "${USER:-}" ] && base_env+=(USER="$USER")

# bwrap with the access the guard policy grants.
bwrap_args=(--unshare-all --die-with-parent --clearenv)
for kv in "${base_env[@]}"; do
  bwrap_args+=(--setenv "${kv%%=*}" "${kv#*=}")
done
for d in /usr /bin /sbin /lib /lib64 /etc /opt; do
  if [ -L "$d" ]; then
    bwrap_args+=(--symlink "$(readlink "$d")" "$d")
  elif [ -d "$d" ]; then
    bwrap_args+=(--ro-bind "$d" "$d")
  fi
done
[ -d "$HOME/.cache" ] && bwrap_args+=(--bind "$HOME/.cache" "$HOME/.cache")
bwrap_args+=(--bind "$proj" "$proj" --proc /proc --dev /dev --tmpfs /tmp --chdir "$proj")

# sandbox MODE CMD...: run CMD in MODE, with the project as working directory.
sandbox() {
  local mode=$1
  shift
  # shellcheck disable=SC2086  # guard_flags holds several words
  case "$mode" in
    native) (cd "$proj" && exec env -i "${base_env[@]}" "$@") ;;
    bwrap) (cd "$proj" && exec env -i "${base_env[@]}" bwrap "${bwrap_args[@]}" "$@") ;;
    guard) (cd "$proj" && exec env -i "${base_env[@]}" "$guard" $guard_flags --policy "$policy" \
              --audit "$audit" -- "$@") ;;
  esac
}
modes=(native bwrap guard)

# ---- inputs -------------------------------------------------------------------

t_setup=$SECONDS
log "work directory $work ($( [ "$smoke" = 1 ] && echo smoke || echo full ) mode, $runs run(s))"
io_bytes=$((io_mib * 1048576))
if [ "$only_startup" = 0 ]; then
  log "generating $meta_files-file tree, $git_files-file git repository, $c_sources-file C project"
  python3 "$here/gen.py" tree "$proj/tree" "$meta_files"
  python3 "$here/gen.py" repo "$proj/repo" "$git_files"
  python3 "$here/gen.py" cproj "$proj/cproj" "$c_sources"
  mkdir -p "$proj/io"
  log "writing the ${io_mib} MiB pre-session file"
  dd if=/dev/zero of="$proj/io/pre.bin" bs=1M count="$io_mib" conv=fsync status=none
  log "inputs ready in $((SECONDS - t_setup)) s"
fi

# ---- sanity: the sandboxes really confine -----------------------------------------

why() {  # why FILE: the first error line of a sandbox's stderr
  local line
  line=$(grep -m1 -iE 'error|cannot|denied|too many|no such|refus|fail' "$1" 2>/dev/null || true)
  [ -n "$line" ] || line=$(tail -c 200 "$1" | tr '\n' ' ')
  printf '%s' "${line:0:240}"
}

failures=()
probe='test -d /usr/bin && test -w . && test ! -e /var/lib && ! touch /usr/.guard-bench-probe 2>/dev/null'
for m in bwrap guard; do
  if ! sandbox "$m" bash -c "$probe" >/dev/null 2>"$work/probe.err"; then
    failures+=("sanity/$m: the sandbox does not confine as expected: $(why "$work/probe.err")")
  fi
done

# ---- timing -------------------------------------------------------------------

# Inner scripts time their steps with $EPOCHREALTIME (no fork) and print
# "@@T NAME MICROSECONDS"; a failed step prints "@@F NAME STATUS".
# shellcheck disable=SC2016  # expanded by the inner bash, not here
inner_head='__l=${EPOCHREALTIME/./}; lap() { local n=${EPOCHREALTIME/./}; echo "@@T $1 $((n - __l))"; __l=$n; }'
step() {  # step NAME CMD: one timed step of an inner script
  printf '{ %s; } >/dev/null || { echo "@@F %s $?"; exit 1; }; lap %s; ' "$2" "$1" "$1"
}
# shellcheck disable=SC2016
reset_clock='__l=${EPOCHREALTIME/./}; '

declare -A samples  # samples[step|mode] = "us us ..."
declare -A failed   # failed[step|mode] = 1 when any run of it failed


# measure PREPARE INNER: RUNS interleaved iterations in every mode; PREPARE
# runs natively (untimed) before each.
measure() {
  local prepare=$1 inner=$2 i m out err
  local order
  for ((i = 0; i < runs; i++)); do
    # rotate the order so no mode always runs first after preparation
    case $((i % 3)) in
      0) order=(native bwrap guard) ;;
      1) order=(guard native bwrap) ;;
      2) order=(bwrap guard native) ;;
    esac
    for m in "${order[@]}"; do
      [ -n "$prepare" ] && (cd "$proj" && bash -c "$prepare") >/dev/null 2>&1
      err="$work/err.$m"
      if out=$(sandbox "$m" bash -c "$inner_head; $inner" 2>"$err"); then :; fi
      local got=0
      while read -r tag name val; do
        case "$tag" in
          @@T) samples["$name|$m"]+="$val "; got=1 ;;
          @@F) failures+=("$name/$m: exit $val: $(why "$err")"); failed["$name|$m"]=1 ;;
        esac
      done <<<"$out"
      if [ "$got" = 0 ] && ! grep -q '^@@F' <<<"$out"; then
        failures+=("$m: the sandbox failed: $(why "$err")")
      fi
    done
  done
}

minimum() {  # smallest of the numbers given as arguments
  printf '%s\n' "$@" | sort -g | head -1
}

median() {  # median of the numbers given as arguments
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print ""; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# 1. startup ---------------------------------------------------------------------
t0=$SECONDS
log "startup: $su_rounds round(s) of $su_runs runs"
declare -A su
if [ "$have_hyperfine" = 1 ]; then
  for ((r = 0; r < su_rounds; r++)); do
    json="$work/startup.$r.json"
    native_cmd="env -i PATH=$PATH LC_ALL=C true"
    bwrap_cmd="env -i PATH=$PATH LC_ALL=C bwrap $(printf '%q ' "${bwrap_args[@]}") true"
    guard_cmd="env -i PATH=$PATH HOME=$HOME LC_ALL=C $guard $guard_flags --policy $policy --audit $audit -- true"
    if (cd "$proj" && hyperfine -N --style none --warmup "$su_warmup" --runs "$su_runs" \
          --export-json "$json" "$native_cmd" "$bwrap_cmd" "$guard_cmd") >/dev/null 2>"$work/hf.err"; then
      i=0
      while read -r line; do
        su[${modes[$i]}]+="$line "
        i=$((i + 1))
      done < <(python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(" ".join(str(int(t * 1e6)) for t in r["times"]))' "$json")
    else
      failures+=("startup: hyperfine failed: $(why "$work/hf.err")")
      break
    fi
  done
else
  for ((r = 0; r < su_rounds * su_runs; r++)); do
    for m in "${modes[@]}"; do
      s=${EPOCHREALTIME/./}
      sandbox "$m" true >/dev/null 2>&1 || failures+=("startup/$m failed")
      e=${EPOCHREALTIME/./}
      su[$m]+="$((e - s)) "
    done
  done
fi
for m in "${modes[@]}"; do samples["startup|$m"]=${su[$m]:-}; done
log "startup done in $((SECONDS - t0)) s"

if [ "$only_startup" = 0 ]; then
# 2. metadata ----------------------------------------------------------------------
t0=$SECONDS
log "metadata: find | xargs stat over $meta_files files; git status over $git_files files"
measure "" "$(step meta 'find tree -type f -print0 | xargs -0 stat')"
if [ "$meta_files" -gt 10000 ]; then
  # tree/d000 holds the first 10,000 files: a size the view can serve under
  # a 20,000-descriptor limit, so the row has a number even when the full
  # tree fails with EMFILE
  measure "" "$(step meta10k 'find tree/d000 -type f -print0 | xargs -0 stat')"
fi
measure "" "$(step git 'git -C repo status')"
log "metadata done in $((SECONDS - t0)) s"

# 3. sequential I/O --------------------------------------------------------------------
t0=$SECONDS
log "sequential I/O: ${io_mib} MiB"
measure "rm -f io/w.bin" \
  "$(step readpre 'dd if=io/pre.bin of=/dev/null bs=1M')$reset_clock$(step write "dd if=/dev/zero of=io/w.bin bs=1M count=$io_mib conv=fsync")$reset_clock$(step read 'dd if=io/w.bin of=/dev/null bs=1M')"
rm -f "$proj/io/w.bin"
log "sequential I/O done in $((SECONDS - t0)) s"

# 4. build ---------------------------------------------------------------------------
t0=$SECONDS
log "build: make -j2 of $c_sources C files"
measure "make -C cproj clean" "$(step build 'make -C cproj -j2')"
log "build done in $((SECONDS - t0)) s"
fi

# ---- report ---------------------------------------------------------------------------

fmt_ms() { awk -v u="$1" 'BEGIN { if (u == "") print "n/a"; else if (u < 100000) printf "%.1f ms", u / 1000; else printf "%.0f ms", u / 1000 }'; }
fmt_mbs() { awk -v u="$1" -v b="$io_bytes" 'BEGIN { if (u == "" || u == 0) print "n/a"; else printf "%.0f MB/s", b / u }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.2f", a / b }'; }
leq() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a <= b) }'; }
geq() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a >= b) }'; }

times() { if [ -n "$1" ]; then printf '%s×' "$1"; else printf 'n/a'; fi; }
missed=0
rows=()
minrows=()
# row LABEL KIND(time|rate) STEP TARGET_TEXT CHECK
row() {
  local label=$1 kind=$2 name=$3 target=$4 check=$5
  local n b g gn gb met
  # shellcheck disable=SC2086
  n=$(median ${samples["$name|native"]:-})
  # shellcheck disable=SC2086
  b=$(median ${samples["$name|bwrap"]:-})
  # shellcheck disable=SC2086
  g=$(median ${samples["$name|guard"]:-})
  # a mode with any failed run has no valid median
  [ -n "${failed["$name|native"]:-}" ] && n=
  [ -n "${failed["$name|bwrap"]:-}" ] && b=
  [ -n "${failed["$name|guard"]:-}" ] && g=
  local cells
  if [ "$kind" = time ]; then
    gn=$(ratio "$g" "$n"); gb=$(ratio "$g" "$b")
    cells="$(fmt_ms "$n") | $(fmt_ms "$b") | $(fmt_ms "$g")"
  else  # throughput: the ratio of rates is the inverse ratio of times
    gn=$(ratio "$n" "$g"); gb=$(ratio "$b" "$g")
    cells="$(fmt_mbs "$n") | $(fmt_mbs "$b") | $(fmt_mbs "$g")"
  fi
  case "$check" in
    startup) if [ -n "$g" ] && leq "$g" 20000 && leq "$gb" 3; then met=yes; else met=NO; fi ;;
    le:*) if leq "$gn" "${check#le:}"; then met=yes; else met=NO; fi ;;
    ge:*) if geq "$gn" "${check#ge:}"; then met=yes; else met=NO; fi ;;
  esac
  [ "$met" = NO ] && missed=$((missed + 1))
  for m in native bwrap guard; do
    [ -n "${failed["$name|$m"]:-}" ] && cells=$(awk -v m="$m" -v c="$cells" 'BEGIN {
      split(c, a, " [|] "); i = (m == "native") ? 1 : (m == "bwrap") ? 2 : 3; a[i] = "FAIL"
      print a[1] " | " a[2] " | " a[3] }')
  done
  [ -n "${failed["$name|guard"]:-}" ] && met="NO (fails)"
  rows+=("| $label | $cells | $(times "$gn") | $(times "$gb") | $target | $met |")
  # the same from the fastest run of each mode: load from other processes
  # only ever adds time, so on a shared machine this is the steadier ratio
  local fn fb fg
  # shellcheck disable=SC2086
  fn=$(minimum ${samples["$name|native"]:-})
  # shellcheck disable=SC2086
  fb=$(minimum ${samples["$name|bwrap"]:-})
  # shellcheck disable=SC2086
  fg=$(minimum ${samples["$name|guard"]:-})
  [ -n "${failed["$name|guard"]:-}" ] && fg=
  if [ "$kind" = time ]; then
    minrows+=("| $label | $(times "$(ratio "$fg" "$fn")") | $(times "$(ratio "$fg" "$fb")") |")
  else
    minrows+=("| $label | $(times "$(ratio "$fn" "$fg")") | $(times "$(ratio "$fb" "$fg")") |")
  fi
}

row "startup: \`true\`" time startup "≤ 20 ms and ≤ 3× bwrap" startup
[ "$only_startup" = 0 ] && {
row "metadata: find + stat, $meta_files files" time meta "≤ 1.5× native" le:1.5
[ "$meta_files" -gt 10000 ] &&
  row "metadata: find + stat, 10000 of them" time meta10k "≤ 1.5× native" le:1.5
row "metadata: \`git status\`, $git_files files" time git "≤ 1.5× native" le:1.5
row "seq write ${io_mib} MiB, dd conv=fsync" rate write "≥ 80 % of native" ge:0.8
row "seq read ${io_mib} MiB, right after write" rate read "≥ 80 % of native" ge:0.8
row "seq read ${io_mib} MiB, written before session" rate readpre "≥ 80 % of native" ge:0.8
row "build: make -j2, $c_sources C files" time build "≤ 1.2× native" le:1.2
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
rev=$(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown)
echo "## guard host mode vs native vs bubblewrap ($( [ "$smoke" = 1 ] && echo smoke || echo full )$( [ "$only_startup" = 1 ] && echo ", startup only"))"
echo
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($cpu), kernel $(uname -r), guard $rev, $(bwrap --version)"
echo "guard options: \`${guard_flags:-(none)}\`. Open-file limit (ulimit -n): $(ulimit -n)."
echo "Medians of $runs interleaved run(s) per workload; startup: median of $((su_rounds * su_runs)) runs$( [ "$have_hyperfine" = 1 ] && echo " (hyperfine -N)")."
echo "Throughput rows: guard/native and guard/bwrap are ratios of throughput (higher is better);"
echo "time rows: ratios of time (lower is better)."
echo
echo "| workload | native | bwrap | guard | guard/native | guard/bwrap | target | met? |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "The same ratios from the fastest run of each mode (steadier on a loaded machine):"
echo
echo "| workload | guard/native | guard/bwrap |"
echo "|---|---|---|"
printf '%s\n' "${minrows[@]}"
echo
echo "Total benchmark time: $SECONDS s."

if [ "${#failures[@]}" -gt 0 ]; then
  echo
  echo "FAILURES:"
  printf -- '- %s\n' "${failures[@]}"
  exit 1
fi
if [ "$strict" = 1 ] && [ "$missed" -gt 0 ]; then
  exit 1
fi
exit 0
