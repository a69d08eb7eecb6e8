// The filesystem view: a libfuse3 filesystem that shows the host tree through
// the policy. The jail makes it the agent's root.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "policy/audit.h"
#include "policy/error.h"
#include "policy/policy.h"

namespace guard::fusefs {

// AllowedAudit says which allowed operations become audit events. Denials
// are always audited.
enum class AllowedAudit {
  kNone,    // only denials
  kWrites,  // plus the first modifying operation on each path
  kFirst,   // plus the first access of any kind to each path
};

// Overlay is a file the view serves read-only instead of the host's, held
// in a sealed memfd (makeOverlay). The view and the jail's layer copy from
// the descriptor in the kernel: the content is never copied through the
// memory of guard's forked processes, where each fresh page is a fault.
struct Overlay {
  std::string path;  // absolute in ViewOptions::overlays; relative in Bind::layer
  int fd = -1;       // the maker's, open for the whole session; never the agent's (CLOEXEC)
};

// makeOverlay returns a sealed memfd (mode MODE, close-on-exec) holding the
// host file SOURCE, when not empty, followed by TAIL. A SOURCE that cannot
// be read, or that is not a regular file, is an error.
Result<int> makeOverlay(const std::string& source, std::string_view tail, mode_t mode);

struct ViewOptions {
  // mountpoint is an empty directory on the host that the view is mounted
  // on; the jail copies the mount into its namespace and pivots into it.
  std::string mountpoint;
  // synthetic are absolute top-level directories the view always shows as
  // empty, whatever the policy says (the jail mounts /proc, /dev and /tmp on
  // them). Their host contents are never served.
  std::vector<std::string> synthetic = {"/proc", "/dev", "/sys"};
  // mountpoints are top-level directories that must exist for the jail to
  // mount on: served from the host when the policy shows them, shown empty
  // (like synthetic ones) when it hides them.
  std::vector<std::string> mountpoints = {"/tmp"};
  // overlays are files the view serves, read-only, instead of the host's,
  // with the memfd's mode. The session's CA is appended to the CA bundle
  // this way, so the agent trusts it with no per-tool setup; the preload
  // shim and /etc/ld.so.preload are served this way too. An overlay whose
  // path does not exist on the host can be opened by name but is not listed
  // in its directory.
  std::vector<Overlay> overlays;
  AllowedAudit allowed_audit = AllowedAudit::kWrites;
  // audit_base is copied into every event (session, user, groups, host).
  policy::AuditEvent audit_base;
  // writeback_cache lets the kernel cache writes (FUSE_CAP_WRITEBACK_CACHE):
  // a file read right after it was written is served from memory (1 GiB:
  // 0.1x -> 0.7x native in bench/host), sequential writes are no faster.
  // Off by default, for two costs: the kernel then trusts its own size and
  // mtime of a regular file it holds, so a change the host makes in place
  // to a file the agent already looked at (an editor saving without a
  // rename) may stay unseen until the kernel drops the file; and every
  // close makes the next stat of that file ask the view again (one more
  // request per open of /etc/passwd or a header). Policy decisions do not
  // depend on it.
  bool writeback_cache = false;
  // threads is the maximum number of FUSE worker threads.
  unsigned threads = 8;
};

// Bind is a host directory or file that the jail mounts over the view at the same
// path, so that the kernel serves it with no round trip through the view.
struct Bind {
  std::string path;
  bool writable = false;
  // layer lists the view's overlays inside a read-only directory (/etc),
  // with paths relative to it, shown over the host's files (the jail
  // mounts a read-only overlayfs of this layer over the host directory).
  std::vector<Overlay> layer;
};

// planBinds lists the directories the jail may bind instead of serving them
// through the view: the largest trees that one rule decides alike
// (policy::Policy::subtree is kUniform), read-only or, with WRITABLE_TREES,
// read-write, that hold no mount point, and the read-only files of
// read-only directories that do not qualify. A read-only tree holding some
// of the view's overlays gets them as its layer. Refused writes to a
// bound read-only tree fail in the kernel (EROFS) with no audit event, and
// allowed writes to a bound read-write tree are not audited, so the caller
// asks for binds only where its audit level allows (docs/security.md).
// A tree is left to the view when a hard link in it could reach a file a
// rule hides: a read-only tree must be root's and not writable by others,
// on a device where no hidden file has a second name; a read-write tree on
// a device with no hidden file at all. Call after the view is mounted.
std::vector<Bind> planBinds(const policy::Policy& policy, const ViewOptions& options,
                            bool writable_trees);

class View;

// ViewHandle owns a mounted, running view. Destroying it stops serving and
// unmounts; the agent then sees ENOTCONN, never the host.
class ViewHandle {
 public:
  ~ViewHandle();
  ViewHandle(const ViewHandle&) = delete;
  ViewHandle& operator=(const ViewHandle&) = delete;

  // detachHostMount lazily unmounts the view from the host mountpoint once
  // the jail holds its own copy, so no host process can walk into it.
  Error detachHostMount();

  // failed reports whether the serving loop ended on its own (an error).
  bool failed() const;

  // ViewHandle is created by mountView only.
  explicit ViewHandle(std::unique_ptr<View> view);

 private:
  std::unique_ptr<View> view_;
};

// ViewProcess is a view served by a process of its own, so that guard
// outlives it and can report its death, and so that the process that
// starts the jail holds no serving threads.
struct ViewProcess {
  pid_t pid = -1;
  int control_fd = -1;  // closing it stops the view
};

// spawnView forks a process that writes its own audit events to
// AUDIT_PATH (appending whole lines, like the caller's sink), mounts the view
// at options.mountpoint and serves it. Returns once the view is mounted, or
// the child's error. Call it before the caller starts any thread.
Result<ViewProcess> spawnView(const policy::Policy& policy, const std::string& audit_path,
                              const ViewOptions& options);

// detachView asks the view process to lazily unmount the host mountpoint
// (the jail holds its own copy by then).
Error detachView(const ViewProcess& view);

// stopView closes the control channel and waits for the view process;
// returns an error when it died on its own or failed.
Error stopView(ViewProcess* view);

// mountView mounts the view at options.mountpoint and starts serving it on
// background threads. POLICY and SINK must outlive the handle. Returns kIo
// with a clear message when /dev/fuse or the mount is unavailable.
Result<std::unique_ptr<ViewHandle>> mountView(const policy::Policy& policy,
                                              policy::AuditSink* sink,
                                              const ViewOptions& options);

}  // namespace guard::fusefs
