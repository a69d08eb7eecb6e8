// VM mode: runs the session's command in a QEMU microvm whose root
// filesystem is the filesystem view, exported to the guest with virtiofsd.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/error.h"

namespace guard::vmhost {

struct VmSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in the PATH of `env`, inside the guest
  std::vector<std::string> env;   // the command's whole environment
  std::string cwd;                // absolute, inside the view
  std::string root;               // host path where the filesystem view is mounted
  std::string hostname = "guard";
  // net_fd is the proxy's socket (as in JailSpec): QEMU runs in a network
  // namespace of its own whose tap device is the guest's only network, and
  // hands the proxy its listeners there (netns.h, setupVmNetwork). -1: the
  // guest gets no network device at all.
  int net_fd = -1;
  uint16_t proxy_port = 15001;
  // mcp_answer answers a request of the preload shim inside the guest
  // (policy/wire.h, without descriptors), which the guest's init relays
  // over the control port; see proxy::McpGuestRelays. On "W" it sets
  // *CLIENT and *SERVER, the filter's sockets, which the session then owns
  // and joins to the wrapped server's stdio in the guest. Unset: every
  // request is refused.
  std::function<std::string(std::string_view request, int* client, int* server)> mcp_answer;
  unsigned memory_mib = 1024;
  unsigned cpus = 1;
  // image_dir holds vmlinux and initramfs.cpio (scripts/vm-prepare.sh);
  // empty: vmImageDir().
  std::string image_dir;
};

// vmImageDir is where guard looks for the guest kernel and initramfs:
// $GUARD_VM_DIR, else the `vm` folder next to the guard binary (build/vm,
// where scripts/vm-prepare.sh puts them by default).
// With EXE_DIR, the folder of guard's own executable instead (where the
// guest init is built).
std::string vmImageDir(bool exe_dir = false);

// runVm boots the VM, runs SPEC's command in it with the caller's stdin,
// stdout and stderr passed through (a terminal is put in raw mode and the
// command gets a pseudo-terminal), and waits for it. Returns the command's
// exit status (128+N when killed by signal N), or an Error with one clear
// line: the kernel or initramfs missing (naming scripts/vm-prepare.sh),
// QEMU or virtiofsd failing to start or dying, the guest failing to set up
// or to start the command. QEMU and virtiofsd are always stopped before
// runVm returns.
//
// ON_STARTED runs in the calling process once virtiofsd's own mount
// namespace holds the view, before the VM boots (the caller may then detach
// the view's host mount).
//
// The guest's one network device is a tap in QEMU's own network
// namespace, where every TCP connection goes to guard's proxy and DNS to
// its responder, and everything else is dropped: nothing else leaves the
// VM but the view and the control port.
//
// WATCH lists processes the VM depends on (the view's, the proxy's): if one
// dies first, the VM is stopped (fail closed), *DIED is set to its pid and
// the status is 128+SIGKILL. They are left unreaped for their owner.
//
// Call it from a thread that outlives the session (QEMU and virtiofsd die
// with the thread that started them). Signals relayed to the command are
// caught with process-wide handlers for the duration, whatever thread the
// kernel delivers them to; the previous dispositions are restored.
Result<int> runVm(const VmSpec& spec, const std::function<void()>& on_started,
                  const std::vector<pid_t>& watch = {}, pid_t* died = nullptr);

// kvmUsable probes, by trying (opening /dev/kvm and creating a VM), whether
// QEMU can use KVM here; on false REASON says why.
bool kvmUsable(std::string* reason);

}  // namespace guard::vmhost
