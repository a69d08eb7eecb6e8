// The namespace jail of host mode: runs the agent in new user, mount, PID,
// network, IPC and UTS namespaces, rooted in the filesystem view.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "policy/error.h"

namespace guard::vmhost {

struct JailSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in the PATH of `env`
  std::vector<std::string> env;   // the agent's whole environment
  std::string cwd;                // absolute, inside the view
  std::string root;               // host path where the filesystem view is mounted
  // writable lists absolute paths (inside the view) that Landlock lets the
  // agent write beneath; everything else is read-only to the kernel too.
  std::vector<std::string> writable;
  // binds lists host directories and files mounted over the view at the
  // same path: trees the policy decides alike (fusefs::planBinds). A bind
  // that fails is left out, and the view serves the tree.
  struct Bind {
    std::string path;  // absolute, no symlink on the way
    bool writable = false;
    // files are shown over a read-only directory: relative path -> a
    // sealed memfd with the content and mode (fusefs::makeOverlay), copied
    // into a read-only overlayfs layer above the host directory.
    std::vector<std::pair<std::string, int>> files;
  };
  std::vector<Bind> binds;
  std::string hostname = "guard";
  // net_fd, when set, is the proxy's socket: the jail routes the network
  // namespace to the proxy and hands it the listeners (see netns.h). Without
  // it the namespace holds loopback only.
  int net_fd = -1;
  uint16_t proxy_port = 15001;
};

// Setup steps, one code each, so a failure names the step.
enum class JailStep {
  kFork,
  kUnshare,
  kIdMap,
  kMountPrivate,
  kMountProc,
  kMountDev,
  kMountTmp,
  kPivotRoot,
  kLoopback,
  kNetwork,
  kChdir,
  kLandlock,
  kCapabilities,
  kSeccomp,
  kExec,
};

const char* jailStepName(JailStep step);

// runJail starts SPEC's command in the jail and waits for it. ON_ROOTED runs
// in the calling process once the jail has pivoted into the view (the
// caller then detaches the view's host mount). Returns the command's exit
// status (128+N when killed by signal N), or an Error naming the failed step
// with the reason.
//
// The calling process may be multi-threaded (the view serves from threads):
// the jail is started with fork(2), and the child never takes a lock another
// thread could hold.
//
// WATCH lists processes the jail depends on, such as the ones that serve
// the view and the proxy: if one dies first, the jail is killed (fail
// closed) and *DIED is set to its pid. They are left unreaped for their owner.
Result<int> runJail(const JailSpec& spec, const std::function<void()>& on_rooted,
                    const std::vector<pid_t>& watch = {}, pid_t* died = nullptr);

// userNamespacesAvailable probes, by trying, whether this process may create
// a user namespace; on false REASON says what is missing.
bool userNamespacesAvailable(std::string* reason);

}  // namespace guard::vmhost
