#!/usr/bin/env bash
# MCP governance benchmark: what guard's MCP governance adds, each workload run
# natively and through guard in the same run, interleaved, as ratios.
#
#   bench/mcp/run.sh [--smoke | --full] [options]
#
# 1. Shim overhead on fork/exec-heavy work. Every process of a session loads
#    the preload shim (build/libguard-interpose.so): a constructor (dlsym, an
#    fstat of descriptor 0 for the MCP sniffer), one 'C' exchange with the
#    session's MCP supervisor per process image that execs, and a name
#    compare per exec (policy/wire.h). Two workloads, each run three ways:
#    natively; with LD_PRELOAD of an empty library (the loader's cost of any
#    preload, for reference); and with LD_PRELOAD=the shim while
#    build/bench/mcp-supervisor (bench/mcp/supervisor.cc: guard's
#    McpSupervisor on the policy below) listens at the abstract name
#    GUARD_WIRE_NAME, so the shim takes its real path:
#      loop   sh -c 'i=0; while [ $i -lt N ]; do /bin/true; i=$((i+1)); done'
#      build  make -j2 of a generated C project (one main.c plus F files of
#             six functions), from clean every time (cleaning is not timed)
#    --reps rounds per workload, the three ways in rotating order each round;
#    reported are the medians of wall time and of CPU time (the workload's
#    processes plus the supervisor's), the ratio shim/native of the medians,
#    and the median of the per-round ratios. Before timing, a supervisor run
#    with --count must have seen the shim's 'C' requests (at least one for
#    the loop, one per compiler driver for the build) and an 'E' for `node`,
#    a candidate name, and node must still run; the counts are printed.
# 2. tools/call round trip: bench/mcp/rtt.mjs (the official SDK's client)
#    makes --calls sequential tools/call of server-everything's echo, after
#    --warmup unmeasured ones, three ways, rotating, --rounds times:
#      direct    node .../server-everything/dist/index.js stdio
#      mcp-wrap  build/guard mcp-wrap --policy P --audit /dev/null -- (the same)
#      session   build/guard --policy P --audit FILE -- node rtt.mjs ... (the
#                session's supervisor wraps the server; the audit log must
#                then hold one tools/call event per call)
#    Reported: the medians over rounds of each run's median, p90 and p99 in
#    microseconds, and the added median, guard minus direct.
#
# Targets: shim/native <= 1.05 for both workloads (wall time, and CPU time,
# the steadier of the two on a shared machine); added
# tools/call median <= 200 µs. Absolute times on a shared machine are noise;
# the ratios and differences come from the same interleaved run.
#
# Everything runs in a private network namespace: the script re-executes
# itself under `unshare -n` (root; otherwise `unshare -rn`), so the abstract
# socket name cannot meet a real session's, and nothing leaves the machine.
#
# Options:
#   --smoke            for CI, ~30 s: loop of 200 x 2 rounds, build of 8 files
#                      x 1 round, 200 calls (50 warm-up) x 1 round
#   --full             (default, ~10 min) loop of 2000 x 10 rounds, build of 40
#                      files x 8 rounds, 2000 calls (500 warm-up) x 7 rounds
#   --reps N           rounds per overhead workload (both workloads)
#   --iterations N     the loop's count of /bin/true
#   --files N          C files of the generated project
#   --calls N          measured tools/call per run
#   --warmup N         unmeasured tools/call before them
#   --rounds N         rounds of the three round-trip runs
#   --only LIST        comma-separated subset of loop,build,rtt
#   --guard PATH       the guard binary (default build/guard)
#   --shim PATH        the preload shim (default build/libguard-interpose.so)
#   --supervisor PATH  default build/bench/mcp-supervisor (built with make
#                      when missing)
#   --strict           exit 1 when guard misses a target
#   --keep             keep the temporary directory (/var/tmp/guard-mcp-bench-*)
#   -h, --help         this text
#
# Prints a Markdown report on stdout, progress on stderr.
# Exit status: 0 done, 1 a run failed (listed under FAILURES) or, with
# --strict, guard missed a target; 2 setup error.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
# shellcheck source=bench/lib.sh
. "$repo_root/bench/lib.sh"

smoke=0
reps=
iterations=
files=
calls=
warmup=
rounds=
only=loop,build,rtt
strict=0
keep=0
guard_bin="$repo_root/build/guard"
shim="$repo_root/build/libguard-interpose.so"
supervisor_src="$repo_root/build/bench/mcp-supervisor"
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --full) smoke=0 ;;
    --reps) reps=$2; shift ;;
    --iterations) iterations=$2; shift ;;
    --files) files=$2; shift ;;
    --calls) calls=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --only) only=$2; shift ;;
    --guard) guard_bin=$2; shift ;;
    --shim) shim=$2; shift ;;
    --supervisor) supervisor_src=$2; shift ;;
    --strict) strict=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }

# ---- a private network namespace ------------------------------------------------------

if [ "${GUARD_MCP_BENCH_NETNS:-}" != inner ]; then
  command -v unshare >/dev/null || die "unshare (util-linux) is missing"
  export GUARD_MCP_BENCH_NETNS=inner
  if [ "$(id -u)" = 0 ]; then
    exec unshare -n -- "$0" "${args[@]}"
  fi
  exec unshare -rn -- "$0" "${args[@]}"
fi
unset GUARD_MCP_BENCH_NETNS
ip link set lo up 2>/dev/null || true  # nothing here needs it; guard sessions may

if [ "$smoke" = 1 ]; then
  iterations=${iterations:-200}; files=${files:-8}
  calls=${calls:-200}; warmup=${warmup:-50}; rounds=${rounds:-1}
  loop_reps=${reps:-2}
  build_reps=${reps:-1}
else
  iterations=${iterations:-2000}; files=${files:-40}
  calls=${calls:-2000}; warmup=${warmup:-500}; rounds=${rounds:-7}
  loop_reps=${reps:-10}
  build_reps=${reps:-8}
fi
has() { [[ ",$only," == *",$1,"* ]]; }

# ---- prerequisites ------------------------------------------------------------

export LC_ALL=C
for t in node make cc sh awk; do
  command -v "$t" >/dev/null || die "$t is missing (scripts/install-deps.sh installs it)"
done
fixtures="$repo_root/tests/mcp"
everything="$fixtures/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
if [ ! -e "$everything" ] || [ ! -d "$fixtures/node_modules/@modelcontextprotocol/sdk" ]; then
  die "tests/mcp/node_modules is not installed (scripts/install-deps.sh runs npm ci there)"
fi
[ -x "$guard_bin" ] || die "no guard binary at $guard_bin (make build/guard)"
[ -e "$shim" ] || die "no shim at $shim (make build/libguard-interpose.so)"
shim=$(cd "$(dirname "$shim")" && pwd)/$(basename "$shim")
if [ ! -x "$supervisor_src" ]; then
  log "building $supervisor_src"
  mk=(-f Makefile)
  grep -q 'bench/mcp/module.mk' "$repo_root/Makefile" || mk+=(-f bench/mcp/module.mk)
  make -C "$repo_root" "${mk[@]}" "${supervisor_src#"$repo_root"/}" >&2 ||
    die "cannot build the supervisor"
fi

# ---- work directory and processes ---------------------------------------------------

work=$(mktemp -d /var/tmp/guard-mcp-bench-XXXXXX)
chmod 0755 "$work"
started=()  # pids of the processes this script started
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  stop_started
  if [ "$keep" = 1 ]; then
    log "kept $work"
  else
    case "$work" in
      /var/tmp/guard-mcp-bench-*) rm -rf --one-file-system "$work" ;;
    esac
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failures=()
fail() { failures+=("$*"); log "FAILED: $*"; }
why() {  # why FILE: the first error line of a log, or its end
  local line
  line=$(grep -m1 -iE 'error|fatal|cannot|denied|refus|fail|not ' "$1" 2>/dev/null || true)
  [ -n "$line" ] || line=$(tail -c 300 "$1" 2>/dev/null | tr '\n' ' ')
  printf '%s' "${line:0:300}"
}

# A rebuild during the run must not change what is measured: copies. guard
# finds the shim it puts into sessions next to itself, so the two go together.
mkdir -p "$work/bin"
supervisor="$work/bin/mcp-supervisor"
cp "$supervisor_src" "$supervisor"
cp "$guard_bin" "$work/bin/guard"
cp "$shim" "$work/bin/libguard-interpose.so"
guard_bin="$work/bin/guard"
shim="$work/bin/libguard-interpose.so"

# The policy: the supervisor's and the session's. Two stdio servers (so the
# shim's candidate names are npx and node), echo allowed; the session sees
# the system, the SDK and this folder read-only and its directory read-write.
policy="$work/policy.yaml"
cat >"$policy" <<EOF
version: 1
layer: bench-mcp
filesystem:
  default: hidden
  rules:
    - read-only: [/usr, /bin, /lib, /lib64, /etc, "$fixtures", "$here"]
    - read-write: ["{project}"]
env:
  default: deny
  rules:
    - allow: [PATH, HOME, LANG]
mcp:
  default: deny
  servers:
    - name: files
      command: [npx, mcp-server-filesystem, "**"]
      tools: {deny: [write_file, edit_file, move_file]}
    - name: everything
      command: [node, "**/server-everything/dist/index.js", "**"]
      tools: {allow: [echo]}
EOF

# start_supervisor [--count]: starts the supervisor, sets sup_pid and sup_out.
sup_pid=
sup_out=
start_supervisor() {
  sup_out="$work/supervisor.$RANDOM.out"
  "$supervisor" --policy "$policy" --audit /dev/null "$@" </dev/null >"$sup_out" 2>&1 &
  sup_pid=$!
  started+=("$sup_pid")
  for _ in $(seq 100); do
    grep -q '^ready' "$sup_out" 2>/dev/null && return 0
    kill -0 "$sup_pid" 2>/dev/null || break
    sleep 0.05
  done
  die "the supervisor did not start: $(why "$sup_out")"
}
stop_supervisor() {
  kill -TERM "$sup_pid" 2>/dev/null || true
  wait "$sup_pid" 2>/dev/null || true
}
sup_cpu_ticks() {  # utime + stime of the supervisor so far
  local st
  read -r -a st <"/proc/$sup_pid/stat" || { echo 0; return; }
  echo $((st[13] + st[14]))
}
# sup_counts: SIGUSR1 to a --count supervisor; prints "C E S other".
sup_counts() {
  local before line
  before=$(grep -c '^requests' "$sup_out" || true)
  kill -USR1 "$sup_pid"
  for _ in $(seq 100); do
    [ "$(grep -c '^requests' "$sup_out" || true)" -gt "$before" ] && break
    sleep 0.02
  done
  line=$(grep '^requests' "$sup_out" | tail -1)
  awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); printf "%s ", kv[2] } print "" }' <<<"$line"
}

clk_tck=$(getconf CLK_TCK)
loop_script="i=0; while [ \$i -lt $iterations ]; do /bin/true; i=\$((i+1)); done"

# The generated C project: F files of a few functions each, and main.c.
proj="$work/proj"
mkdir -p "$proj/src"
cat >"$proj/common.h" <<'EOF'
#include <stddef.h>
struct acc { long sum; unsigned hash; int count; };
static inline unsigned mix(unsigned h, long v) { return (h ^ (unsigned)v) * 16777619u; }
EOF
for ((f = 0; f < files; f++)); do
  {
    echo '#include "../common.h"'
    echo "#include <string.h>"
    for ((g = 0; g < 6; g++)); do
      cat <<EOF
static long tab_${f}_${g}[64];
long f${f}_${g}(struct acc *a, const char *s, int n) {
  long r = ${g};
  for (int i = 0; i < n; i++) {
    switch ((s[i % (int)strlen(s)] + i) % 5) {
      case 0: r += tab_${f}_${g}[i & 63] * 3; break;
      case 1: r ^= (long)i << (${g} % 7); break;
      case 2: tab_${f}_${g}[(r + i) & 63] += r; break;
      case 3: r = r * 31 + ${f}; break;
      default: a->hash = mix(a->hash, r); break;
    }
  }
  a->sum += r;
  a->count++;
  return r;
}
EOF
    done
    echo "long run${f}(struct acc *a, int n) {"
    echo "  long r = 0;"
    for ((g = 0; g < 6; g++)); do
      echo "  r += f${f}_${g}(a, \"file ${f} function ${g}\", n);"
    done
    echo "  return r;"
    echo "}"
  } >"$proj/src/f$f.c"
done
{
  echo '#include <stdio.h>'
  echo '#include "../common.h"'
  for ((f = 0; f < files; f++)); do echo "long run${f}(struct acc *a, int n);"; done
  echo 'int main(void) {'
  echo '  struct acc a = {0, 2166136261u, 0};'
  echo '  long r = 0;'
  for ((f = 0; f < files; f++)); do echo "  r += run${f}(&a, 100);"; done
  printf '%s\n' '  printf("%ld %u %d\n", r + a.sum, a.hash, a.count);'
  echo '  return 0;'
  echo '}'
} >"$proj/src/main.c"
cat >"$proj/Makefile" <<'EOF'
SRCS := $(wildcard src/*.c)
OBJS := $(SRCS:.c=.o)
CFLAGS := -O2 -Wall
prog: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $(OBJS)
src/%.o: src/%.c common.h
	$(CC) $(CFLAGS) -c $< -o $@
EOF

clean_proj() { rm -f "$proj"/src/*.o "$proj/prog"; }

# timed MODE WORKLOAD ROUND: one run; appends "ROUND WALL_S CPU_TICKS" to
# res/WORKLOAD.MODE (CPU of the workload's processes plus the supervisor's),
# or records a failure.
timed() {
  local mode=$1 w=$2 round=$3 s0 s1 out rc t0 t1 ticks
  s0=$(sup_cpu_ticks)
  out=$(
    set +e
    t0=$EPOCHREALTIME
    case "$mode.$w" in
      native.loop) sh -c "$loop_script" ;;
      empty.loop) LD_PRELOAD=$empty sh -c "$loop_script" ;;
      shim.loop) LD_PRELOAD=$shim sh -c "$loop_script" ;;
      native.build) make -s -j2 -C "$proj" ;;
      empty.build) LD_PRELOAD=$empty make -s -j2 -C "$proj" ;;
      shim.build) LD_PRELOAD=$shim make -s -j2 -C "$proj" ;;
    esac </dev/null >"$work/last.out" 2>&1
    rc=$?
    t1=$EPOCHREALTIME
    read -r -a st <"/proc/$BASHPID/stat"
    echo "$rc $t0 $t1 $((st[15] + st[16]))"
  )
  s1=$(sup_cpu_ticks)
  read -r rc t0 t1 ticks <<<"$out"
  if [ "$rc" != 0 ]; then
    fail "$w ($mode): exit status $rc: $(why "$work/last.out")"
    return 0
  fi
  if [ "$w" = build ] && [ ! -x "$proj/prog" ]; then
    fail "build ($mode): no program was built"
    return 0
  fi
  awk -v r="$round" -v a="$t0" -v b="$t1" -v c="$ticks" -v s=$((s1 - s0)) \
    'BEGIN { printf "%d %.6f %d\n", r, b - a, c + s }' >>"$res/$w.$mode"
}

res="$work/res"
mkdir -p "$res"
t_start=$SECONDS

# ---- 1. shim overhead -------------------------------------------------------------------

counts_loop="n/a"
counts_build="n/a"
if has loop || has build; then
  # Sanity, untimed: the shim talks to the supervisor.
  log "checking that the shim asks the supervisor"
  start_supervisor --count
  check_n=50
  if ! LD_PRELOAD=$shim sh -c "i=0; while [ \$i -lt $check_n ]; do /bin/true; i=\$((i+1)); done" \
      </dev/null >"$work/check.out" 2>&1; then
    fail "loop under the shim: $(why "$work/check.out")"
  fi
  read -r c e _ _ <<<"$(sup_counts)"
  counts_loop="$c 'C' and $e 'E' requests for $check_n execs of /bin/true"
  # At least one: sh (dash) starts commands with vfork, so the list the first
  # child fetches lands in the parent's memory and serves the later children.
  [ "$c" -ge 1 ] ||
    fail "the shim sent no 'C' request for $check_n execs: it is not on its real path"
  [ "$e" = 0 ] || fail "the shim asked 'E' about /bin/true, which is no candidate"
  # node is a candidate: its exec is asked about ('E'), and it must still run.
  c0=$c
  if ! out=$(LD_PRELOAD=$shim sh -c 'exec node -e "console.log(6 * 7)"' </dev/null 2>&1) ||
      [ "$out" != 42 ]; then
    fail "node under the shim did not run: ${out:0:300}"
  fi
  read -r c e _ _ <<<"$(sup_counts)"
  [ "$e" -ge 1 ] || fail "the shim did not ask 'E' about an exec of node (a candidate name)"
  if has build; then
    clean_proj
    c0=$c
    if ! LD_PRELOAD=$shim make -s -j2 -C "$proj" </dev/null >"$work/check.out" 2>&1; then
      fail "the build under the shim failed: $(why "$work/check.out")"
    fi
    read -r c e _ _ <<<"$(sup_counts)"
    counts_build="$((c - c0)) 'C' requests for one build of $((files + 1)) files"
    [ $((c - c0)) -ge "$files" ] ||
      fail "the shim sent $((c - c0)) 'C' requests for a build of $files files"
  fi
  stop_supervisor
  log "shim check: $counts_loop; $counts_build"

  # Timed: the supervisor as a session's proxy runs it (McpSupervisor::start).
  # The empty preload (a library with one int) is what any LD_PRELOAD costs:
  # the loader's open, mmaps and relocation of one more object per process.
  empty="$work/bin/libempty.so"
  echo 'int guard_bench_empty;' >"$work/empty.c"
  cc -shared -fPIC -O2 -o "$empty" "$work/empty.c" || die "cannot build the empty preload library"
  modes=(native empty shim)
  start_supervisor
  for w in loop build; do
    has "$w" || continue
    if [ "$w" = loop ]; then n=$loop_reps; else n=$build_reps; fi
    log "$w: $n rounds of native, empty-preload and shim runs"
    [ "$w" = build ] && { clean_proj; make -s -j2 -C "$proj" >/dev/null 2>&1 </dev/null || true; }  # warm the caches
    for ((r = 0; r < n; r++)); do
      for ((i = 0; i < 3; i++)); do
        m=${modes[$(((i + r) % 3))]}
        [ "$w" = build ] && clean_proj
        timed "$m" "$w" "$r"
      done
    done
  done
  kill -0 "$sup_pid" 2>/dev/null || fail "the supervisor died during the timed runs: $(why "$sup_out")"
  stop_supervisor
fi

# ---- 2. tools/call round trip ----------------------------------------------------------

if has rtt; then
  sess="$work/session"
  mkdir -p "$sess"
  rtt=(node "$here/rtt.mjs" --fixtures "$fixtures" --n "$calls" --warmup "$warmup")
  server=(node "$everything" stdio)
  # rtt_run CONFIG ROUND: one rtt.mjs run; its JSON goes to res/rtt.CONFIG.ROUND.
  rtt_run() {
    local cfg=$1 r=$2 out="$res/rtt.$1.$2" rc=0
    case "$cfg" in
      direct) "${rtt[@]}" -- "${server[@]}" >"$out" 2>"$out.err" || rc=$? ;;
      mcp-wrap) "${rtt[@]}" -- "$guard_bin" mcp-wrap --policy "$policy" --audit /dev/null \
                  -- "${server[@]}" >"$out" 2>"$out.err" || rc=$? ;;
      session)
        : >"$work/session-audit.jsonl"
        (cd "$sess" && "$guard_bin" --policy "$policy" --audit "$work/session-audit.jsonl" \
           -- "${rtt[@]}" -- "${server[@]}") >"$out" 2>"$out.err" </dev/null || rc=$? ;;
    esac
    if [ "$rc" != 0 ]; then
      fail "rtt/$cfg (round $((r + 1))): exit status $rc: $(grep -m1 -E 'rtt.mjs|guard' "$out.err" || why "$out.err")"
      rm -f "$out"
      return
    fi
    if ! node -e 'const o = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").pop()); if (!(o.median_us > 0)) process.exit(1)' "$out" 2>/dev/null; then
      fail "rtt/$cfg (round $((r + 1))): no result: $(tail -c 200 "$out" | tr '\n' ' ')"
      rm -f "$out"
      return
    fi
    if [ "$cfg" = session ]; then
      # The session's supervisor must have wrapped the server: one audit
      # event per tools/call, all allowed.
      local n_calls
      n_calls=$(grep '"surface":"mcp"' "$work/session-audit.jsonl" | grep '"action":"tools/call"' |
                grep -c '"decision":"allow"' || true)
      if [ "$n_calls" != $((calls + warmup)) ]; then
        fail "rtt/session (round $((r + 1))): the audit log has $n_calls allowed tools/call events, not $((calls + warmup)): the server was not wrapped"
        rm -f "$out"
      fi
    fi
  }
  configs=(direct mcp-wrap session)
  for ((r = 0; r < rounds; r++)); do
    log "round trips: round $((r + 1)) of $rounds"
    for ((i = 0; i < 3; i++)); do
      rtt_run "${configs[$(((i + r) % 3))]}" "$r"
    done
  done
fi

# ---- report -------------------------------------------------------------------------------

median() {  # median of the numbers on stdin ("" when none)
  sort -g | awk 'NF { v[++n] = $1 } END { if (n == 0) exit
    if (n % 2) print v[(n + 1) / 2]; else print (v[n / 2] + v[n / 2 + 1]) / 2 }'
}
col() {  # col FILE N: column N of FILE, or nothing
  if [ -e "$1" ]; then awk -v c="$2" '{ print $c }' "$1"; fi
}
rtt_metric() {  # rtt_metric CONFIG KEY: median over rounds
  local f
  for f in "$res"/rtt."$1".*; do
    [ -e "$f" ] || continue
    [[ "$f" == *.err ]] && continue
    tail -1 "$f" | sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p"
  done | median
}
rtt_rounds() {  # rtt_rounds CONFIG: CONFIG's median minus direct's, round by round
  local r a b out=()
  for ((r = 0; r < rounds; r++)); do
    a=$(tail -1 "$res/rtt.$1.$r" 2>/dev/null | sed -n 's/.*"median_us":\([0-9.]*\).*/\1/p')
    b=$(tail -1 "$res/rtt.direct.$r" 2>/dev/null | sed -n 's/.*"median_us":\([0-9.]*\).*/\1/p')
    if [ -n "$a" ] && [ -n "$b" ]; then
      out+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.0f", a - b }')")
    else
      out+=("n/a")
    fi
  done
  local IFS=,
  echo "${out[*]}" | sed 's/,/, /g; s/$/ µs/'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.3f", a / b }'; }
fmt() {  # fmt VALUE KIND
  awk -v v="$1" -v k="$2" 'BEGIN {
    if (v == "") { print "n/a"; exit }
    if (k == "s") printf "%.3f s", v
    else if (k == "ticks") printf "%.2f s", v / '"$clk_tck"'
    else if (k == "us") printf "%.0f µs", v
    else if (k == "x") printf "%.3f×", v
    else if (k == "dus") printf "%+.0f µs", v
    else print v }'
}
verdict() {  # verdict OK-EXPRESSION VALUE: yes / NO / n/a (a is VALUE)
  [ -n "$2" ] || { echo "n/a"; return; }
  if awk -v a="$2" "BEGIN { exit !($1) }"; then echo yes; else echo NO; fi
}

# pairratio FILE_A FILE_B [COLUMN]: the median over rounds of A's wall time
# (or COLUMN: 3 is CPU) over B's.
pairratio() {
  [ -e "$1" ] && [ -e "$2" ] || return 0
  awk -v c="${3:-2}" 'NR == FNR { b[$1] = $c; next } ($1 in b) && b[$1] > 0 { print $c / b[$1] }' "$2" "$1" |
    median | awk '{ printf "%.3f", $1 }'
}
rows=()
for w in loop build; do
  has "$w" || continue
  if [ "$w" = loop ]; then
    label="sh loop, $iterations × /bin/true"
    n=$loop_reps
  else
    label="make -j2, $((files + 1)) .c files, from clean"
    n=$build_reps
  fi
  nw=$(col "$res/$w.native" 2 | median)
  ew=$(col "$res/$w.empty" 2 | median)
  sw=$(col "$res/$w.shim" 2 | median)
  nc=$(col "$res/$w.native" 3 | median)
  ec=$(col "$res/$w.empty" 3 | median)
  sc=$(col "$res/$w.shim" 3 | median)
  rw=$(ratio "$sw" "$nw")
  rows+=("| $label: wall, median of $n | $(fmt "$nw" s) | $(fmt "$ew" s) | $(fmt "$sw" s) | **$(fmt "$rw" x)** | $(fmt "$(pairratio "$res/$w.shim" "$res/$w.native")" x) | $(fmt "$(ratio "$ew" "$nw")" x) | ≤ 1.05× | $(verdict 'a <= 1.05' "$rw") |")
  rc=$(ratio "$sc" "$nc")
  rows+=("| $label: CPU (its processes + supervisor) | $(fmt "$nc" ticks) | $(fmt "$ec" ticks) | $(fmt "$sc" ticks) | **$(fmt "$rc" x)** | $(fmt "$(pairratio "$res/$w.shim" "$res/$w.native" 3)" x) | $(fmt "$(ratio "$ec" "$nc")" x) | ≤ 1.05× | $(verdict 'a <= 1.05' "$rc") |")
done

rrows=()
if has rtt; then
  for k in median_us p90_us p99_us; do
    d=$(rtt_metric direct "$k")
    wv=$(rtt_metric mcp-wrap "$k")
    sv=$(rtt_metric session "$k")
    dw=$(awk -v a="$wv" -v b="$d" 'BEGIN { if (a != "" && b != "") print a - b }')
    ds=$(awk -v a="$sv" -v b="$d" 'BEGIN { if (a != "" && b != "") print a - b }')
    target="" met_w="" met_s=""
    if [ "$k" = median_us ]; then
      target="≤ +200 µs"
      met_w=$(verdict 'a <= 200' "$dw")
      met_s=$(verdict 'a <= 200' "$ds")
      met_w="mcp-wrap $met_w, session $met_s"
    fi
    rrows+=("| ${k%_us} | $(fmt "$d" us) | $(fmt "$wv" us) | $(fmt "$sv" us) | $(fmt "$dw" dus) | $(fmt "$ds" dus) | $target | $met_w |")
  done
fi

missed=$(printf '%s\n' "${rows[@]}" "${rrows[@]}" | grep -c '\bNO\b' || true)
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
rev=$(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown)
echo "## guard MCP governance: shim overhead and tools/call round trip ($( [ "$smoke" = 1 ] && echo smoke || echo full ))"
echo
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($cpu), kernel $(uname -r), guard $rev,"
echo "node $(node --version), $(cc --version | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
if has loop || has build; then
  echo
  echo "Shim overhead: native, LD_PRELOAD of an empty library (what any preload costs), and"
  echo "LD_PRELOAD=libguard-interpose.so with guard's MCP supervisor listening (private network"
  echo "namespace), in rotating order each round. CPU is the workload's and the supervisor's."
  echo "Shim check (untimed, counting supervisor): $counts_loop; $counts_build."
  echo
  echo "| workload | native | empty preload | shim + supervisor | shim/native | shim/native, per-round ratios' median | empty/native | target | met? |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
fi
if has rtt; then
  echo
  echo "tools/call of server-everything's echo through the SDK client (bench/mcp/rtt.mjs):"
  echo "$calls sequential calls after $warmup warm-up per run; medians over $rounds rotating round(s)."
  echo
  echo "| statistic | direct | guard mcp-wrap | guard session | mcp-wrap − direct | session − direct | target | met? |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rrows[@]}"
  echo
  for cfg in mcp-wrap session; do
    echo "Added median per round, $cfg − direct: $(rtt_rounds "$cfg")."
  done
fi
echo
echo "Total benchmark time: $((SECONDS - t_start)) s."

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
