#!/usr/bin/env bash
# Prepares what `guard --vm` boots: the guest kernel, taken from Debian's
# cloud kernel package (downloaded with apt-get download and unpacked, never
# installed on the host), and an initramfs holding guard's guest init
# (build/guard-vm-init, built by make) and the few modules it loads.
#
# Idempotent: a second run with nothing changed does nothing. The kernel is
# fetched again only when apt offers a newer cloud kernel; the initramfs is
# rebuilt when the guest init or the module list changes.
#
# Usage: scripts/vm-prepare.sh [--init PATH]
#   GUARD_VM_DIR   where the kernel and initramfs go (default: build/vm)
# Output: $GUARD_VM_DIR/vmlinux (uncompressed PVH ELF), initramfs.cpio,
#         kernel.release
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vm_dir="${GUARD_VM_DIR:-$repo_root/build/vm}"
init_bin="$repo_root/build/guard-vm-init"
if [ "${1:-}" = "--init" ] && [ -n "${2:-}" ]; then
  init_bin="$2"
fi

# The modules guest_init.cc loads, in this order (each after what it
# depends on): the virtio-mmio transport, the virtio console (the control
# port), FUSE and virtiofs (the root), and the network device. Built-in
# ones are skipped.
modules=(virtio_ring virtio virtio_mmio virtio_console fuse virtiofs failover net_failover virtio_net)
meta_package=linux-image-cloud-amd64

say() { echo "vm-prepare: $*" >&2; }
die() {
  echo "vm-prepare: error: $*" >&2
  exit 1
}

for tool in apt-get apt-cache dpkg-deb lz4 cpio sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing (run scripts/install-deps.sh)"
done
[ -x "$init_bin" ] || die "the guest init $init_bin is missing (run make first)"

mkdir -p "$vm_dir"
vm_dir="$(cd "$vm_dir" && pwd)"

# ---- the kernel -------------------------------------------------------------
# The newest cloud kernel is what the meta package depends on, e.g.
# linux-image-6.1.0-56-cloud-amd64 (signed; the -unsigned twin holds the
# same image).
newest_kernel() {
  apt-cache depends "$meta_package" 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)\(-unsigned\)\?$/\1\2/p' |
    head -n 1 || true
}
kernel_pkg=$(newest_kernel)
if [ -z "$kernel_pkg" ] && [ ! -f "$vm_dir/vmlinux" ]; then
  # Package lists may have been cleaned (as container images do): fetch them.
  sudo=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo=sudo
  if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
    say "apt knows no $meta_package: running apt-get update"
    $sudo apt-get update -qq || true
    kernel_pkg=$(newest_kernel)
  fi
fi
kernel_ver=""
if [ -n "$kernel_pkg" ]; then
  kernel_ver=$(apt-cache policy "$kernel_pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n 1)
fi
have=""
[ -f "$vm_dir/kernel.package" ] && have=$(cat "$vm_dir/kernel.package")

if [ -z "$kernel_pkg" ] || [ -z "$kernel_ver" ] || [ "$kernel_ver" = "(none)" ]; then
  if [ -n "$have" ] && [ -f "$vm_dir/vmlinux" ]; then
    say "apt knows no $meta_package (no package lists?); keeping $have"
  else
    die "apt knows no $meta_package: run 'apt-get update' (Debian 12's main archive carries it)"
  fi
elif [ "$have" = "$kernel_pkg $kernel_ver" ] && [ -f "$vm_dir/vmlinux" ] &&
  [ -d "$vm_dir/modules" ] && [ "$(cat "$vm_dir/modules.list" 2>/dev/null)" = "${modules[*]}" ]; then
  say "kernel $kernel_pkg $kernel_ver already prepared"
else
  work="$vm_dir/.work"
  rm -rf "$work"
  mkdir -p "$work"
  say "downloading $kernel_pkg $kernel_ver"
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$kernel_pkg=$kernel_ver") ||
    die "apt-get download $kernel_pkg failed"
  deb=$(ls "$work"/*.deb 2>/dev/null | head -n 1)
  [ -n "$deb" ] || die "apt-get download left no .deb in $work"
  say "unpacking $(basename "$deb") (not installing it)"
  dpkg-deb -x "$deb" "$work/root"
  vmlinuz=$(ls "$work"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
  [ -n "$vmlinuz" ] || die "$kernel_pkg holds no /boot/vmlinuz-*"
  release=${vmlinuz##*/vmlinuz-}
  moddir="$work/root/lib/modules/$release"
  [ -d "$moddir" ] || die "$kernel_pkg holds no /lib/modules/$release"

  # The bzImage's payload is lz4 (legacy frame format, magic 02 21 4c 18):
  # find the magic and decompress from there. lz4 stops with an error at the
  # bytes that follow the payload; what it wrote before is the kernel, and
  # the ELF check below is what decides.
  say "extracting the uncompressed vmlinux from $(basename "$vmlinuz")"
  offset=$(grep -obUaP '\x02\x21\x4c\x18' "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
  [ -n "$offset" ] || die "no lz4 payload (magic 02 21 4c 18) in $vmlinuz"
  tail -c +$((offset + 1)) "$vmlinuz" | lz4 -dc > "$work/vmlinux" 2>/dev/null || true
  [ "$(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' ')" = "7f454c46" ] ||
    die "the lz4 payload of $vmlinuz did not decompress to an ELF kernel"

  rm -rf "$work/modules"
  mkdir -p "$work/modules"
  : > "$work/modules/order"
  for m in "${modules[@]}"; do
    if grep -qE "/$m\.ko$" "$moddir/modules.builtin"; then
      say "module $m is built into the kernel"
      continue
    fi
    ko=$(find "$moddir/kernel" -name "$m.ko" | head -n 1)
    [ -n "$ko" ] || die "module $m is neither built in nor in $kernel_pkg"
    cp "$ko" "$work/modules/$m.ko"
    echo "$m.ko" >> "$work/modules/order"
  done
  cp "$work/root/boot/config-$release" "$work/config" 2>/dev/null || true

  # Replace the previous kernel only once the new one is complete.
  rm -rf "$vm_dir/modules"
  mv "$work/modules" "$vm_dir/modules"
  mv -f "$work/vmlinux" "$vm_dir/vmlinux"
  [ -f "$work/config" ] && mv -f "$work/config" "$vm_dir/config"
  echo "$release" > "$vm_dir/kernel.release"
  echo "$kernel_pkg $kernel_ver" > "$vm_dir/kernel.package"
  echo "${modules[*]}" > "$vm_dir/modules.list"
  rm -rf "$work"
  say "kernel $release ready ($(du -h "$vm_dir/vmlinux" | cut -f1) vmlinux)"
fi

# ---- the initramfs ------------------------------------------------------------
# Rebuilt when the init, the modules or this script's module list change.
inputs=$( (sha256sum "$init_bin" "$vm_dir"/modules/*; echo "${modules[*]}"; echo unsigned) | sha256sum | cut -d' ' -f1)
if [ -f "$vm_dir/initramfs.cpio" ] && [ "$(cat "$vm_dir/initramfs.inputs" 2>/dev/null)" = "$inputs" ]; then
  say "initramfs up to date"
  exit 0
fi
stage="$vm_dir/.initramfs"
rm -rf "$stage"
mkdir -p "$stage"/{dev,proc,sys,root,modules}
cp "$init_bin" "$stage/init"
chmod 0755 "$stage/init"
cp "$vm_dir"/modules/* "$stage/modules/"
# The modules go in without their signatures. The guest kernel checks a
# signature when there is one (SHA-256 of the module, an RSA verify: ~25 ms
# for the nine under TCG), and that check proves nothing here: the same
# initramfs holds /init, which the kernel runs as PID 1 unchecked. Unsigned
# modules load (the kernel does not enforce signatures) and taint it.
magic='~Module signature appended~'
for ko in "$stage"/modules/*.ko; do
  [ -f "$ko" ] || continue  # every module built in: no file
  size=$(stat -c %s "$ko")
  [ "$(tail -c 28 "$ko" | head -c 27)" = "$magic" ] || continue
  # struct module_signature (12 bytes, its last four the big-endian length
  # of the signature) precedes the magic string.
  siglen=$(tail -c 32 "$ko" | head -c 4 | od -An -tu1 | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}')
  truncate -s $((size - 28 - 12 - siglen)) "$ko"
done
# Uncompressed: under TCG the kernel's gzip inflate of ~2 MiB costs more
# than QEMU copying the bytes into guest memory.
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
  cpio -o -H newc --owner=0:0 --reproducible --quiet) > "$vm_dir/initramfs.cpio.tmp"
mv -f "$vm_dir/initramfs.cpio.tmp" "$vm_dir/initramfs.cpio"
echo "$inputs" > "$vm_dir/initramfs.inputs"
rm -rf "$stage"
say "initramfs ready ($(du -h "$vm_dir/initramfs.cpio" | cut -f1): init + ${#modules[@]} modules)"
