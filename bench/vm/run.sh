#!/usr/bin/env bash
# VM-mode benchmark: `guard --vm -- true` against a bare QEMU microvm that
# boots the same kernel with the same command line into a trivial init (one
# that powers the VM off at once), in one run, boots of the two alternating.
#
#   bench/vm/run.sh            full run (10 boots of each; about 1 min under TCG)
#   bench/vm/run.sh --smoke    2 boots of each (CI)
#
# Options:
#   --guard BIN   the guard binary (default build/guard of this checkout; the
#                 guest image is looked up as guard does: $GUARD_VM_DIR, else
#                 the vm folder next to BIN)
#   --runs N      boots of each
#
# Reported: median wall time from process start to exit (guard: its whole
# session, the command `true` included; bare: QEMU until the guest powers
# off), their ratio, and the peak resident memory of the largest process of
# each (QEMU in both; virtiofsd and guard's own processes are smaller), from
# one extra boot under GNU time. Targets (issue "VM mode"): guard within 1.3x
# of the bare boot and at most 2.0 s under TCG; with KVM at most 300 ms.
# Machine-readable lines start with "@@".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
guard="$repo_root/build/guard"
runs=10
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) runs=2 ;;
    --runs) runs=$2; shift ;;
    --guard) guard=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }
log() { printf 'run.sh: %s\n' "$*" >&2; }

[ -x "$guard" ] || die "no guard binary at $guard (run make first, or pass --guard)"
guard=$(cd "$(dirname "$guard")" && pwd)/$(basename "$guard")
vm_dir=${GUARD_VM_DIR:-$(dirname "$guard")/vm}
[ -f "$vm_dir/vmlinux" ] || die "no guest kernel in $vm_dir (run make vm-image)"
for tool in qemu-system-x86_64 cc cpio python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (run scripts/install-deps.sh)"
done
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian package time)"

work=$(mktemp -d /var/tmp/guard-vm-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/initrd" "$work/project"

# The trivial init: power off as soon as the kernel hands over.
cat > "$work/init.c" <<'EOF'
#include <sys/reboot.h>
#include <unistd.h>
int main(void) { sync(); reboot(RB_POWER_OFF); return 0; }
EOF
cc -static -Os -o "$work/initrd/init" "$work/init.c"
(cd "$work/initrd" && echo init | cpio -o -H newc --quiet > "$work/trivial.cpio")

# The same kernel command line as guard's (it logs it at -vv).
# The same kernel command line and accelerator as guard's (it logs both at
# -vv; it probes KVM by trying).
cd "$work/project"
"$guard" -vv --vm --audit "$work/audit.jsonl" -- true >/dev/null 2>"$work/guard.log" || true
append=$(sed -n 's/.*vm: kernel command line: //p' "$work/guard.log" | tail -n 1)
[ -n "$append" ] || die "guard --vm did not run: $(tail -c 300 "$work/guard.log")"
accel=tcg
cpu=max
# The last boot's: where KVM cannot boot the guest, guard boots again under TCG.
if grep 'QEMU (pid [0-9]*, ' "$work/guard.log" | tail -n 1 | grep -q 'QEMU (pid [0-9]*, kvm'; then
  accel=kvm
  cpu=host
fi
log "kernel command line: $append"

# shellcheck disable=SC2054  # the commas belong to QEMU options
bare=(qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot
  -M microvm,acpi=on,x-option-roms=off -accel "$accel" -cpu "$cpu" -m 512M -smp 1
  -kernel "$vm_dir/vmlinux" -initrd "$work/trivial.cpio" -append "$append" -serial none)
guarded=("$guard" --vm --vm-memory 512 --audit "$work/audit.jsonl" -- true)

log "$runs boots of each ($accel), alternating"
# Alternating boots, timed from spawn to exit: this shared machine's speed
# drifts over a minute, and running all of one, then all of the other (as
# hyperfine does), would charge that drift to one side.
python3 - "$work/times.json" "$runs" "${#bare[@]}" "${bare[@]}" "${guarded[@]}" <<'EOF' ||
import json, subprocess, sys, time
out, runs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cmds = {"bare": sys.argv[4:4 + n], "guard": sys.argv[4 + n:]}
times = {"bare": [], "guard": []}
for i in range(runs + 1):  # the first round warms the caches, untimed
    for name, cmd in cmds.items():
        t = time.perf_counter()
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        if r.returncode != 0:
            sys.exit(f"{name} failed ({r.returncode}): {r.stderr.decode()[-300:]}")
        if i > 0:
            times[name].append(time.perf_counter() - t)
json.dump(times, open(out, "w"))
EOF
  die "a boot failed"

peak() {  # peak RSS (KiB) of the largest process of one run of "$@"
  /usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null 2>&1 || true
  tail -n 1 "$work/rss"
}
bare_kib=$(peak "${bare[@]}")
guard_kib=$(peak "${guarded[@]}")

python3 - "$work/times.json" "$accel" "$bare_kib" "$guard_kib" "$runs" <<'EOF'
import json, statistics, sys
res = json.load(open(sys.argv[1]))
accel, bare_kib, guard_kib, runs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
bare, guard = statistics.median(res["bare"]), statistics.median(res["guard"])
ratio = guard / bare
limit = 2.0 if accel == "tcg" else 0.3
met = ratio <= 1.3 and guard <= limit
print(f"## guard --vm -- true vs a bare microvm boot ({accel}, median of {runs})\n")
print("| | bare QEMU, trivial init | guard --vm -- true | guard/bare | target | met? |")
print("|---|---|---|---|---|---|")
print(f"| boot to exit | {bare*1000:.0f} ms | {guard*1000:.0f} ms | {ratio:.2f}x "
      f"| <= 1.3x and <= {limit:.1f} s | {'yes' if met else 'NO'} |")
print(f"| peak RSS, largest process | {bare_kib/1024:.0f} MiB | {guard_kib/1024:.0f} MiB "
      f"| {guard_kib/bare_kib:.2f}x | | |")
print(f"@@ vm accel={accel} bare_ms={bare*1000:.0f} guard_ms={guard*1000:.0f} ratio={ratio:.2f} "
      f"bare_kib={bare_kib} guard_kib={guard_kib}")
EOF
