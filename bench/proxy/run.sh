#!/usr/bin/env bash
# Proxy benchmark: guard's TLS-intercepting proxy against a direct connection,
# mitmproxy (mitmdump) and squid with ssl-bump, in one run, all on loopback.
#
#   bench/proxy/run.sh [--smoke | --full] [options]
#
# Every path goes to the same HTTPS origin (tests/net/origin.py: nginx on
# 127.0.0.2 serving /1k and a 64 MiB /big, certificate from tests/net/pki.sh's
# test CA). The client (build/bench/proxy-loadgen) sends HTTP CONNECT
# bench.test:PORT to the proxy and verifies the proxy's minted certificate
# against that proxy's CA; each proxy verifies the origin against the test
# CA. Names resolve by a hosts file (squid), a resolve addon (mitmproxy) and
# tests/net/dns_upstream.py (guard, through --dns-upstream).
#
# Workloads, each run for every peer in rotating order, --rounds times:
#   keepalive  requests/s of /1k over --conns keep-alive connections, and the
#              proxy's CPU time per request (utime+stime of its processes)
#   newconn    requests/s with a new TCP + CONNECT + TLS connection each
#   bulk       MB/s of /big over one connection
#   latency    p50/p99 of /1k at one keep-alive connection
#   hold       --hold idle intercepted connections open (one request each):
#              the proxy's resident memory (VmRSS, and Pss) with them open
# Before timing, each proxy must refuse an origin whose certificate the test
# CA did not sign (untrusted.test on 127.0.0.3): both hops are verified.
#
# Options:
#   --smoke         a few seconds in all, for CI: 0.3 s windows, 50 held
#   --full          (default) 10 s windows, 3 rounds, 1,000 held
#   --rounds N      interleaved rounds (medians are reported)
#   --seconds S     measured window per run
#   --conns N       keep-alive connections (default 16)
#   --hold N        connections for the memory row
#   --peers LIST    comma-separated subset of direct,guard,mitmproxy,squid
#   --workloads LIST  comma-separated subset of hold,keepalive,bulk,latency,newconn
#   --guard PATH    the guard binary (default build/guard)
#   --loadgen PATH  the load generator (default build/bench/proxy-loadgen;
#                   built with make when missing)
#   --strict        exit 1 when guard misses a target
#   --keep          keep the temporary directory (/var/tmp/guard-proxy-bench-*)
#   -h, --help      this text
#
# Prints a Markdown report on stdout, progress on stderr. When `guard proxy`
# is not available, its column says so and the peers still run.
# Exit status: 0 done, 1 a run failed (listed under FAILURES) or, with
# --strict, guard missed a target; 2 setup error.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
# shellcheck source=bench/lib.sh
. "$repo_root/bench/lib.sh"

smoke=0
rounds=
seconds=
conns=16
hold=
strict=0
keep=0
peers_opt=direct,guard,mitmproxy,squid
workloads_opt=hold,keepalive,bulk,latency,newconn
guard_bin="$repo_root/build/guard"
loadgen_src="$repo_root/build/bench/proxy-loadgen"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --full) smoke=0 ;;
    --rounds) rounds=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --conns) conns=$2; shift ;;
    --hold) hold=$2; shift ;;
    --peers) peers_opt=$2; shift ;;
    --workloads) workloads_opt=$2; shift ;;
    --guard) guard_bin=$2; shift ;;
    --loadgen) loadgen_src=$2; shift ;;
    --strict) strict=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$smoke" = 1 ]; then
  rounds=${rounds:-1}; seconds=${seconds:-0.3}; warmup=0.1; hold=${hold:-50}
  hold_s=0.5; timeout=20
else
  rounds=${rounds:-3}; seconds=${seconds:-10}; warmup=1; hold=${hold:-1000}
  hold_s=2; timeout=120
fi

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }

# ---- prerequisites ------------------------------------------------------------

export LC_ALL=C
for t in python3 openssl nginx awk; do
  command -v "$t" >/dev/null || die "$t is missing (scripts/install-deps.sh installs it)"
done
for f in pki.sh origin.py dns_upstream.py; do
  [ -e "$repo_root/tests/net/$f" ] || die "tests/net/$f is missing"
done
if [ ! -x "$loadgen_src" ]; then
  log "building $loadgen_src"
  mk=(-f Makefile)
  grep -q 'bench/proxy/module.mk' "$repo_root/Makefile" || mk+=(-f bench/proxy/module.mk)
  make -C "$repo_root" "${mk[@]}" "${loadgen_src#"$repo_root"/}" >&2 ||
    die "cannot build the load generator"
fi

IFS=, read -r -a want_workloads <<<"$workloads_opt"
for w in "${want_workloads[@]}"; do
  [[ " hold keepalive bulk latency newconn " == *" $w "* ]] || die "unknown workload $w (try --help)"
done
IFS=, read -r -a want_peers <<<"$peers_opt"
declare -A skip_reason
has_peer() { [[ ",$peers_opt," == *",$1,"* ]]; }
if has_peer guard; then
  if [ ! -x "$guard_bin" ]; then
    skip_reason[guard]="no guard binary at $guard_bin"
  elif ! "$guard_bin" proxy --help >/dev/null 2>&1; then
    skip_reason[guard]="guard proxy not available: \`$guard_bin proxy --help\` fails"
  fi
fi
if has_peer mitmproxy && ! command -v mitmdump >/dev/null; then
  skip_reason[mitmproxy]="mitmdump is not installed (Debian package mitmproxy)"
fi
certgen=/usr/lib/squid/security_file_certgen
if has_peer squid && { ! command -v squid >/dev/null || [ ! -x "$certgen" ]; }; then
  skip_reason[squid]="squid with ssl-bump is not installed (Debian package squid-openssl)"
fi
for p in "${!skip_reason[@]}"; do
  log "${skip_reason[$p]}: skipped"
done

# Every held connection costs the proxy one or two descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((hold * 2 + 256)) ] ||
  die "the open-file limit ($(ulimit -n)) is too low for --hold $hold"

# ---- work directory and processes ---------------------------------------------------

work=$(mktemp -d /var/tmp/guard-proxy-bench-XXXXXX)
chmod 0755 "$work"  # nginx workers and squid run as other users when we are root
started=()          # pids of the processes this script started
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  stop_started
  if [ "$keep" = 1 ]; then
    log "kept $work"
  else
    case "$work" in
      /var/tmp/guard-proxy-bench-*) rm -rf --one-file-system "$work" ;;
    esac
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2317  # called by name (start_$p) or only from such functions
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for DESCRIPTION PID TEST...: poll TEST until it succeeds, PID dies or 20 s pass.
wait_for() {
  local what=$1 pid=$2
  shift 2
  for _ in $(seq 200); do
    "$@" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { log "$what exited during startup"; return 1; }
    sleep 0.1
  done
  log "$what did not start within 20 s"
  return 1
}
# shellcheck disable=SC2317  # called by name (start_$p) or only from such functions
accepting() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

why() {  # why FILE: the first error line of a log
  local line
  line=$(grep -m1 -iE 'error|fatal|cannot|denied|refus|fail|not ' "$1" 2>/dev/null || true)
  [ -n "$line" ] || line=$(tail -c 300 "$1" 2>/dev/null | tr '\n' ' ')
  printf '%s' "${line:0:300}"
}

t_setup=$SECONDS
log "work directory $work ($( [ "$smoke" = 1 ] && echo smoke || echo full ) mode, $rounds round(s) of ${seconds} s)"
loadgen="$work/proxy-loadgen"
cp "$loadgen_src" "$loadgen"  # a rebuild during the run must not change what is measured

# PKI: the origin's test CA (and untrusted.test), plus one CA for each proxy peer.
pki="$work/pki"
"$repo_root/tests/net/pki.sh" "$pki" bench.test >/dev/null
for p in mitmproxy squid; do
  "$repo_root/tests/net/pki.sh" "$work/ca-$p" >/dev/null
done
test_ca="$pki/ca.pem"

# Origin: nginx, bench.test on 127.0.0.2 and untrusted.test on 127.0.0.3.
origin_addr=127.0.0.2
python3 "$repo_root/tests/net/origin.py" run "$work/origin" --pki "$pki" \
  --site "bench.test=$origin_addr" --site untrusted.test=127.0.0.3 \
  >"$work/origin.out" 2>&1 &
started+=($!)
origin_py=$!
wait_for "origin (tests/net/origin.py)" "$origin_py" test -s "$work/origin/origin.ports" ||
  die "origin failed: $(why "$work/origin.out")"
oport=$(awk -F= '$1 == "https" { print $2 }' "$work/origin/origin.ports")
origin_url="https://bench.test:$oport"

# DNS for guard: bench.test and untrusted.test to the origin's addresses.
python3 "$repo_root/tests/net/dns_upstream.py" --listen 127.0.0.1:0 \
  --map "bench.test=$origin_addr" --map untrusted.test=127.0.0.3 \
  --log "$work/dns.log" --port-file "$work/dns.port" >"$work/dns.out" 2>&1 &
started+=($!)
wait_for "dns_upstream.py" "$!" test -s "$work/dns.port" || die "DNS server failed: $(why "$work/dns.out")"
dport=$(cat "$work/dns.port")

# per peer: process, the CA the client trusts, listen address, exited
declare -A pid ca proxy_addr dead
ca[direct]=$test_ca

# shellcheck disable=SC2317  # called by name (start_$p) or only from such functions
start_guard() {
  local port policy="$work/guard-policy.yaml"
  port=$(free_port)
  cat >"$policy" <<EOF
version: 1
layer: bench
mode: enforce
network:
  default: deny
  rules:
    - id: bench.origin
      allow: [bench.test, untrusted.test]
      ports: [$oport]
      inspect: true
    - id: bench.loopback
      allow: 127.0.0.0/8
EOF
  (cd "$work" && exec "$guard_bin" proxy --listen "127.0.0.1:$port" --policy "$policy" \
     --upstream-ca "$test_ca" --ca-out "$work/guard-ca.pem" --dns-upstream "127.0.0.1:$dport" \
     --audit "$work/guard-audit.jsonl" \
     </dev/null >"$work/guard.log" 2>&1) &
  started+=($!)
  pid[guard]=$!
  wait_for "guard proxy" "$!" test -s "$work/guard-ca.pem" &&
    wait_for "guard proxy" "$!" accepting "$port" || return 1
  ca[guard]=$work/guard-ca.pem
  proxy_addr[guard]=127.0.0.1:$port
}

# shellcheck disable=SC2317  # called by name (start_$p) or only from such functions
start_mitmproxy() {
  local port conf="$work/mitmproxy"
  port=$(free_port)
  mkdir -p "$conf"
  # mitmproxy's CA file holds the key and the certificate; EC P-256 like the others.
  cat "$work/ca-mitmproxy/ca.key" "$work/ca-mitmproxy/ca.pem" >"$conf/mitmproxy-ca.pem"
  cat >"$work/mitm_resolve.py" <<EOF
# Resolves the bench names without /etc/hosts: rewrites the server address.
HOSTS = {"bench.test": "$origin_addr", "untrusted.test": "127.0.0.3"}


def server_connect(data):
    host, port = data.server.address
    if host in HOSTS:
        data.server.address = (HOSTS[host], port)
EOF
  mitmdump --mode regular --listen-host 127.0.0.1 --listen-port "$port" \
    --set confdir="$conf" --set ssl_verify_upstream_trusted_ca="$test_ca" \
    --set stream_large_bodies=1m --set flow_detail=0 --set termlog_verbosity=error \
    -q -s "$work/mitm_resolve.py" </dev/null >"$work/mitmproxy.log" 2>&1 &
  started+=($!)
  pid[mitmproxy]=$!
  wait_for "mitmdump" "$!" accepting "$port" || return 1
  ca[mitmproxy]=$work/ca-mitmproxy/ca.pem
  proxy_addr[mitmproxy]=127.0.0.1:$port
}

# shellcheck disable=SC2317  # called by name (start_$p) or only from such functions
start_squid() {
  local port dir="$work/squid"
  port=$(free_port)
  mkdir -p "$dir"
  cp "$work/ca-squid/ca.pem" "$work/ca-squid/ca.key" "$dir/"
  printf '%s bench.test\n127.0.0.3 untrusted.test\n' "$origin_addr" >"$dir/hosts"
  "$certgen" -c -s "$dir/ssl_db" -M 16MB >"$dir/certgen.out" 2>&1 ||
    { log "security_file_certgen -c failed: $(why "$dir/certgen.out")"; return 1; }
  local user_line=
  if [ "$(id -u)" = 0 ]; then
    # squid refuses to keep root: it runs as proxy (or nobody) and must own its files
    local u=proxy
    id "$u" >/dev/null 2>&1 || u=nobody
    user_line="cache_effective_user $u"
    chown -R "$u" "$dir"
  fi
  cat >"$dir/squid.conf" <<EOF
# ssl-bump everything on loopback; no cache, no access log, no DNS.
http_port 127.0.0.1:$port ssl-bump tls-cert=$dir/ca.pem tls-key=$dir/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program $certgen -s $dir/ssl_db -M 16MB
sslcrtd_children 4 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$test_ca
acl local src 127.0.0.0/8
http_access allow local
http_access deny all
cache deny all
access_log none
cache_log $dir/cache.log
pid_filename $dir/squid.pid
coredump_dir $dir
hosts_file $dir/hosts
dns_nameservers 127.0.0.1
pinger_enable off
max_filedescriptors 65536
shutdown_lifetime 0 seconds
$user_line
EOF
  squid -N -f "$dir/squid.conf" </dev/null >"$dir/squid.out" 2>&1 &
  started+=($!)
  pid[squid]=$!
  wait_for "squid" "$!" accepting "$port" || { log "squid: $(why "$dir/cache.log")"; return 1; }
  ca[squid]=$work/ca-squid/ca.pem
  proxy_addr[squid]=127.0.0.1:$port
}

peers=()
for p in "${want_peers[@]}"; do
  case "$p" in
    direct) peers+=(direct) ;;
    guard|mitmproxy|squid)
      [ -n "${skip_reason[$p]:-}" ] && continue
      log "starting $p"
      if "start_$p"; then
        peers+=("$p")
      else
        skip_reason[$p]="$p did not start: $(why "$work/$p.log" 2>/dev/null)"
        [ "$p" = squid ] && skip_reason[$p]="squid did not start: $(why "$work/squid/cache.log")"
        log "${skip_reason[$p]}"
      fi
      ;;
    *) die "unknown peer $p (direct, guard, mitmproxy, squid)" ;;
  esac
done
log "setup done in $((SECONDS - t_setup)) s: ${peers[*]}"

# lg PEER ARGS...: the load generator on PEER's path.
lg() {
  local peer=$1
  shift
  if [ "$peer" = direct ]; then
    "$loadgen" --ca "${ca[direct]}" --resolve "bench.test:$oport:$origin_addr" \
      --resolve "untrusted.test:$oport:127.0.0.3" --origin-pid "$origin_py" \
      --timeout "$timeout" "$@"
  else
    "$loadgen" --proxy "${proxy_addr[$peer]}" --ca "${ca[$peer]}" --pid "${pid[$peer]}" \
      --origin-pid "$origin_py" --timeout "$timeout" "$@"
  fi
}

failures=()

# ---- sanity: both hops are verified ------------------------------------------------------

# Every proxy must refuse an origin whose certificate the test CA did not sign,
# and must serve bench.test (a proxy that did not verify would pass the first).
for p in "${peers[@]}"; do
  out=$(lg "$p" --url "https://untrusted.test:$oport/1k" --mode hold --conns 1 --seconds 0 2>&1 || true)
  if [ "$(awk '$1 == "held" { print $2 }' <<<"$out")" != 0 ]; then
    failures+=("sanity/$p: the untrusted origin was served (the upstream certificate is not verified)")
  fi
  out=$(lg "$p" --url "$origin_url/1k" --mode hold --conns 1 --seconds 0 2>&1 || true)
  if [ "$(awk '$1 == "held" { print $2 }' <<<"$out")" != 1 ]; then
    failures+=("sanity/$p: cannot fetch $origin_url/1k: $(awk '$1 == "first_error" || $1 == "error" { $1 = ""; print }' <<<"$out" | head -1)")
  fi
done

# ---- timing ---------------------------------------------------------------------------

res="$work/res"
mkdir -p "$res"
: >"$work/origin/bench.test.access.log" 2>/dev/null || true

# run WORKLOAD ROUND PEER ARGS...: one load-generator run; its metrics go to a file.
run() {
  local w=$1 r=$2 p=$3 out
  shift 3
  out="$res/$w.$p.$r"
  if [ "$p" != direct ] && ! kill -0 "${pid[$p]}" 2>/dev/null; then
    if [ -z "${dead[$p]:-}" ]; then  # say it once; its later runs are skipped
      local st=0
      wait "${pid[$p]}" 2>/dev/null || st=$?
      [ "$st" -gt 128 ] && [ "$st" != 255 ] && st="$st (signal $((st - 128)))"
      dead[$p]=1
      failures+=("$p exited with status $st before $w in round $((r + 1)); its later runs were skipped")
    fi
    return
  fi
  if ! lg "$p" "$@" >"$out" 2>"$out.err"; then
    failures+=("$w/$p (round $((r + 1))): $(grep -m1 proxy-loadgen "$out.err" || why "$out.err")")
    # a hold run that kept most connections open still measured the memory
    awk '$1 == "held" && $2 > 0 { f = 1 } END { exit !f }' "$out" || rm -f "$out"
  fi
  # the origin's access log and guard's audit log grow by a line per request
  : >"$work/origin/bench.test.access.log" 2>/dev/null || true
  [ -e "$work/guard-audit.jsonl" ] && : >"$work/guard-audit.jsonl"
}

# hold first: in round 1 every proxy's memory is measured before any load;
# newconn last: a proxy that crashes under it still has its other rows
workloads=()
for w in hold keepalive bulk latency newconn; do
  [[ ",$workloads_opt," == *",$w,"* ]] && workloads+=("$w")
done
for ((r = 0; r < rounds; r++)); do
  log "round $((r + 1)) of $rounds"
  wi=0
  for w in "${workloads[@]}"; do
    # rotate the peer order by round and workload: nobody always runs first
    n=${#peers[@]}
    order=()
    for ((i = 0; i < n; i++)); do order+=("${peers[$(((i + r + wi) % n))]}"); done
    wi=$((wi + 1))
    for p in "${order[@]}"; do
      case "$w" in
        keepalive) run "$w" "$r" "$p" --url "$origin_url/1k" --mode keepalive --conns "$conns" \
                     --seconds "$seconds" --warmup "$warmup" ;;
        newconn) run "$w" "$r" "$p" --url "$origin_url/1k" --mode newconn --conns 4 \
                   --seconds "$seconds" --warmup "$warmup" ;;
        bulk) run "$w" "$r" "$p" --url "$origin_url/big" --mode bulk --conns 1 \
                --seconds "$seconds" --warmup "$warmup" ;;
        latency) run "$w" "$r" "$p" --url "$origin_url/1k" --mode latency --conns 1 \
                   --seconds "$seconds" --warmup "$warmup" ;;
        hold) [ "$p" = direct ] && continue
              run "$w" "$r" "$p" --url "$origin_url/1k" --mode hold --conns "$hold" \
                --seconds "$hold_s" --concurrency 32 ;;
      esac
    done
  done
done

# ---- report -------------------------------------------------------------------------------

# metric WORKLOAD PEER NAME: the median of NAME over the rounds ("" when none).
metric() {
  local f vals=()
  for f in "$res/$1.$2".*; do
    [ -e "$f" ] || continue
    [[ "$f" == *.err ]] && continue
    vals+=("$(awk -v k="$3" '$1 == k { print $2 }' "$f")")
  done
  [ "${#vals[@]}" -gt 0 ] || return 0
  printf '%s\n' "${vals[@]}" | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) exit
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.2f", a / b }'; }
fmt() {  # fmt VALUE KIND
  awk -v v="$1" -v k="$2" 'BEGIN {
    if (v == "") { print "n/a"; exit }
    if (k == "rps") printf "%.0f/s", v
    else if (k == "mbs") printf "%.0f MB/s", v
    else if (k == "us") printf "%.0f µs", v
    else if (k == "kib") printf "%.1f MiB", v / 1024
    else print v }'
}
cell() {  # cell PEER VALUE KIND
  if [ -n "${skip_reason[$1]:-}" ]; then printf 'skipped'; else fmt "$2" "$3"; fi
}
times() { if [ -n "$1" ]; then printf '%s×' "$1"; else printf 'n/a'; fi; }

show=(direct guard mitmproxy squid)
rows=()
missed=0
# row LABEL WORKLOAD METRIC KIND TARGET CHECK NEEDS: CHECK is a test of guard's
# value (awk, on g=guard d=direct s=squid m=mitmproxy) or "" for none; it is
# "n/a" unless guard and every peer named in NEEDS have a value.
row() {
  local label=$1 w=$2 k=$3 kind=$4 target=$5 check=$6 needs=${7:-} p v cells="" met=""
  declare -A val
  for p in "${show[@]}"; do
    v=$(metric "$w" "$p" "$k")
    val[$p]=$v
    cells+=" $(cell "$p" "$v" "$kind") |"
  done
  if [ -n "$check" ]; then
    met=yes
    for p in guard $needs; do
      [ -n "${val[$p]}" ] || met="n/a (no $p)"
    done
    if [ "$met" = yes ] && ! awk -v g="${val[guard]}" -v d="${val[direct]}" -v s="${val[squid]}" \
         -v m="${val[mitmproxy]}" "BEGIN { exit !($check) }"; then
      met=NO
      missed=$((missed + 1))
    fi
  fi
  local gd gs gm
  gd=$(times "$(ratio "${val[guard]}" "${val[direct]}")")
  gs=$(times "$(ratio "${val[guard]}" "${val[squid]}")")
  gm=$(times "$(ratio "${val[guard]}" "${val[mitmproxy]}")")
  rows+=("| $label |$cells $gd | $gs | $gm | $target | $met |")
}

row "keep-alive 1 KiB, $conns conns: requests/s" keepalive req_per_s rps \
  "≥ 0.4× direct, ≥ 2× squid, ≥ 25× mitmproxy" "g >= 0.4 * d && g >= 2 * s && g >= 25 * m" \
  "direct squid mitmproxy"
row "keep-alive: proxy CPU per request" keepalive proxy_us_per_req us "≤ 60 µs" "g <= 60"
row "new connection per request, 4 at once: requests/s" newconn req_per_s rps \
  "≥ 0.6× direct, ≥ squid" "g >= 0.6 * d && g >= s" "direct squid"
row "new connection: proxy CPU per request" newconn proxy_us_per_req us "" ""
row "bulk 64 MiB, 1 conn: MB/s" bulk mb_per_s mbs "≥ 0.7× direct" "g >= 0.7 * d" direct
row "latency, 1 conn: p50" latency lat_p50_us us "" ""
row "latency, 1 conn: p99" latency lat_p99_us us "≤ direct + 500 µs" "g <= d + 500" direct
row "memory, $hold held connections: VmRSS" hold proxy_rss_kib kib "≤ 64 MiB" "g <= 65536"
row "memory, $hold held connections: Pss" hold proxy_pss_kib kib "" ""
row "memory, idle before: VmRSS" hold proxy_rss_kib_idle kib "" ""

# Client and proxy CPU use per run: the load generator must not be the bottleneck.
cpurows=()
for w in keepalive newconn bulk latency; do
  line="| $w |"
  for p in "${show[@]}"; do
    c=$(metric "$w" "$p" client_cpu_pct)
    x=$(metric "$w" "$p" proxy_cpu_pct)
    o=$(metric "$w" "$p" origin_cpu_pct)
    if [ -n "${skip_reason[$p]:-}" ] || [ -z "$c" ]; then
      line+=" n/a |"
    else
      line+=" $c / ${x:-–} / ${o:-?} |"
    fi
  done
  cpurows+=("$line")
done

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
rev=$(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown)
mitm_v=$(mitmdump --version 2>/dev/null | awk '/^Mitmproxy/ { print $2 }' || true)
squid_v=$(squid -v 2>/dev/null | awk 'NR == 1 { print $4 }' || true)
echo "## guard proxy vs direct, mitmproxy and squid ssl-bump ($( [ "$smoke" = 1 ] && echo smoke || echo full ))"
echo
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($cpu), kernel $(uname -r), guard $rev,"
echo "mitmproxy ${mitm_v:-?}, squid ${squid_v:-?}, $(nginx -v 2>&1 | sed 's/.*: //') origin."
echo "Medians of $rounds interleaved round(s), ${seconds} s windows after ${warmup} s warm-up;"
echo "ratios are guard over the peer (for µs and MiB rows, lower is better)."
for p in "${!skip_reason[@]}"; do
  echo "$p: ${skip_reason[$p]}: skipped."
done
echo
echo "| workload | direct | guard | mitmproxy | squid | guard/direct | guard/squid | guard/mitmproxy | target | met? |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "CPU use during each window, % of one core (2 cores in all): client (proxy-loadgen) /"
echo "proxy (its processes) / origin (nginx, one worker)."
echo
echo "| workload | direct | guard | mitmproxy | squid |"
echo "|---|---|---|---|---|"
printf '%s\n' "${cpurows[@]}"
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
