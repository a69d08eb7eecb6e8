#!/usr/bin/env bash
# Where does guard's filesystem view lose time? Runs each host-benchmark
# workload natively and under guard, and under guard counts every FUSE
# request by opcode with the kernel's fuse:fuse_request_send/_end
# tracepoints (perf, root), with the time from send to reply.
#
#   bench/host/profile.sh [--guard BIN] [--files N] [--keep]
#
# Prints Markdown: per workload, native vs guard time and the request mix.
# GUARD_* variables in the environment reach guard unchanged (to compare
# builds or knobs). Needs perf with the fuse tracepoints (Linux >= 6.14).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
guard_src="$repo_root/build/guard"
files=10000
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --guard) guard_src=$2; shift ;;
    --files) files=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
command -v perf >/dev/null || { echo "profile.sh: perf is missing" >&2; exit 2; }
perf_events=$(perf list 2>/dev/null || true)
grep -q fuse:fuse_request_send <<<"$perf_events" ||
  { echo "profile.sh: this kernel has no fuse:fuse_request_send tracepoint" >&2; exit 2; }

work=$(mktemp -d /var/tmp/guard-prof-XXXXXX)
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ "$keep" = 1 ]; then
    echo "profile.sh: kept $work" >&2
  elif findmnt -rn -o TARGET | grep -q "^$work"; then
    echo "profile.sh: not removing $work: something is mounted below it" >&2
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT
proj="$work/project"
mkdir -p "$proj/io"
guard="$work/guard"
cp "$guard_src" "$guard"
policy="$here/policy.yaml"
export LC_ALL=C

python3 "$here/gen.py" tree "$proj/tree" "$files"
python3 "$here/gen.py" repo "$proj/repo" 2000
python3 "$here/gen.py" cproj "$proj/cproj" 10
dd if=/dev/zero of="$proj/io/pre.bin" bs=1M count=256 conv=fsync status=none

# shellcheck disable=SC2016  # expanded by the inner bash
inner_head='__l=${EPOCHREALTIME/./}; lap() { local n=${EPOCHREALTIME/./}; echo "@@T $1 $((n - __l))"; __l=$n; }'
step() { printf '{ %s; } >/dev/null || { echo "@@F %s $?"; exit 1; }; lap %s; ' "$2" "$1" "$1"; }

# ms LINES: the "@@T" laps of an inner run as "name=ms" words
ms() { awk '$1 == "@@T" { printf "%s=%.0f ms ", $2, $3 / 1000 } $1 == "@@F" { printf "%s FAILED ", $2 }'; }

profile() {  # profile LABEL PREPARE INNER
  local label=$1 prepare=$2 inner=$3 native guarded
  [ -n "$prepare" ] && (cd "$proj" && bash -c "$prepare") >/dev/null 2>&1
  native=$(cd "$proj" && bash -c "$inner_head; $inner" 2>/dev/null | ms)
  [ -n "$prepare" ] && (cd "$proj" && bash -c "$prepare") >/dev/null 2>&1
  guarded=$(cd "$proj" && perf record -q -e fuse:fuse_request_send -e fuse:fuse_request_end -a \
      -o "$work/$label.data" -- "$guard" --policy "$policy" --audit "$work/audit.jsonl" \
      -- bash -c "$inner_head; $inner" 2>/dev/null | ms)
  echo "- **$label**: native: $native; guard: $guarded" >&2
  summary+=("| $label | $native | $guarded |")
  perf script -i "$work/$label.data" -F time,event,trace 2>/dev/null |
    python3 "$here/fusestat.py" "$label" >>"$work/requests.md"
}

summary=()
: >"$work/requests.md"
profile startup "" "$(step true true)"
profile meta "" "$(step meta 'find tree -type f -print0 | xargs -0 stat')"
profile meta2x "" "$(step pass1 'find tree -type f -print0 | xargs -0 stat')$(step pass2 'find tree -type f -print0 | xargs -0 stat')"
profile git "" "$(step git 'git -C repo status')"
profile readpre "" "$(step readpre 'dd if=io/pre.bin of=/dev/null bs=1M')"
profile build "make -C cproj clean" "$(step build 'make -C cproj -j2')"

echo "### native vs guard ($files-file tree, 2000-file repository, 10-file C project, 256 MiB read)"
echo
echo "| workload | native | guard |"
echo "|---|---|---|"
printf '%s\n' "${summary[@]}"
echo
echo "### FUSE requests under guard, by opcode (time = send to reply, summed)"
echo
echo "| workload | opcode | requests | total ms | mean µs | errors |"
echo "|---|---|---|---|---|---|"
cat "$work/requests.md"
