// The filesystem view: a passthrough libfuse3 low-level filesystem that asks
// the policy about every path before it touches the host.
//
// Trust boundary: every request comes from the agent. Each node holds an
// O_PATH descriptor opened relative to its parent's descriptor with
// O_NOFOLLOW, so the daemon never follows a symlink itself: the kernel
// resolves symlinks inside the view, one component at a time, through
// lookup() below. The path a node was reached by is the path the policy
// judges, so a symlink, `..` or /proc/self/root shows nothing the policy
// hides.
#define FUSE_USE_VERSION 312

#include "fusefs/view.h"

#include <dirent.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace guard::fusefs {

using policy::Access;
using policy::Decision;
using policy::FileOp;
using policy::Verdict;

namespace {

// Seconds the kernel may cache names and attributes. Changes the agent makes
// go through the view, so the kernel's cache stays coherent with them; the
// timeout only bounds how long a change made on the host side goes unseen.
// Paths the agent cannot change (read-only, hidden) change only when the
// host updates them (a package upgrade), so they are cached longer. A name
// found missing on a writable path is forgotten sooner than one found, so
// that a file the user creates on the host soon shows.
constexpr double kEntryTimeout = 5.0;
constexpr double kNegativeTimeout = 1.0;
constexpr double kReadOnlyTimeout = 30.0;

double timeoutFor(const Verdict& v) {
  return v.access == Access::kReadWrite ? kEntryTimeout : kReadOnlyTimeout;
}

std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto existing = spdlog::get("fusefs");
    return existing ? existing : spdlog::stderr_color_mt("fusefs");
  }();
  return l;
}

std::string procPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace

struct Node {
  int fd = -1;  // O_PATH | O_NOFOLLOW on the host object; -1 for none
  Node* parent = nullptr;
  std::string name;
  uint64_t nlookup = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  bool is_dir = false;
  bool is_reg = false;
  bool traverse_only = false;  // hidden directory shown bare, to reach visible descendants
  bool synthetic = false;      // a mount point the jail covers
  bool overlay = false;        // served from a memfd (ViewOptions::overlays)
  Verdict write_verdict;       // the policy's answer for writing this path
  std::atomic<bool> audited_write{false};
  std::atomic<bool> audited_any{false};
  std::unordered_map<std::string, Node*> children;
};

// NodeFd is an O_PATH descriptor for one call: the node's own (directories,
// overlays) or one opened from its parent and checked to be the same object.
class NodeFd {
 public:
  NodeFd(int fd, bool owned, int err) : fd_(fd), owned_(owned), err_(err) {}
  ~NodeFd() {
    if (owned_ && fd_ >= 0) {
      close(fd_);
    }
  }
  NodeFd(const NodeFd&) = delete;
  NodeFd& operator=(const NodeFd&) = delete;
  int get() const { return fd_; }
  int err() const { return err_; }  // 0, or the errno to reply when get() < 0

 private:
  int fd_;
  bool owned_;
  int err_;
};

struct DirHandle {
  DIR* dir = nullptr;
  off_t offset = 0;
  struct dirent* entry = nullptr;
};

class View {
 public:
  View(const policy::Policy& p, policy::AuditSink* sink, ViewOptions opts)
      : policy_(p), sink_(sink), opts_(std::move(opts)) {}

  ~View() { stop(); }

  Error start();
  void stop();
  Error detachHostMount();
  bool failed() const { return loop_error_.load(); }
  bool writeback() const { return writeback_; }

  // ---- FUSE operations (static trampolines call these) -----------------
  void init(fuse_conn_info* conn);
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void forget(fuse_ino_t ino, uint64_t n);
  void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
               fuse_file_info* fi);
  void readlink(fuse_req_t req, fuse_ino_t ino);
  void makeNode(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev,
                const char* link, const char* action);
  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir);
  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned flags);
  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname);
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi);
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  // readdir lists a directory without the hidden names; PLUS (readdirplus)
  // also looks each file up, so that stat after a listing needs no request.
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus);
  void statfs(fuse_req_t req, fuse_ino_t ino);
  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags);
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

  Node* node(fuse_ino_t ino) {
    return ino == FUSE_ROOT_ID ? &root_ : reinterpret_cast<Node*>(ino);
  }

 private:
  std::string pathOfLocked(const Node* n) const;
  std::string pathOf(const Node* n) {
    std::lock_guard<std::mutex> lock(mu_);
    return pathOfLocked(n);
  }
  static std::string join(const std::string& dir, const char* name) {
    return dir == "/" ? "/" + std::string(name) : dir + "/" + name;
  }
  bool isMountpoint(const std::string& path) const {
    for (const std::string& s : opts_.mountpoints) {
      if (s == path) {
        return true;
      }
    }
    return false;
  }
  bool isSynthetic(const std::string& path) const {
    for (const std::string& s : opts_.synthetic) {
      if (s == path) {
        return true;
      }
    }
    return false;
  }
  // checkWrite decides a modifying operation on PATH with verdict V. Returns
  // 0 to proceed, or the errno to reply; emits the audit event.
  int checkWrite(fuse_req_t req, const std::string& path, const Verdict& v, const char* action,
                 Node* n);
  void audit(fuse_req_t req, const std::string& path, const Verdict& v, const char* action);
  bool hiddenInode(dev_t dev, ino_t ino) {
    std::lock_guard<std::mutex> lock(hidden_mu_);
    return hidden_inodes_.count(key(dev, ino)) != 0;
  }
  void noteHidden(dev_t dev, ino_t ino) {
    std::lock_guard<std::mutex> lock(hidden_mu_);
    hidden_inodes_.insert(key(dev, ino));
  }
  static uint64_t key(dev_t dev, ino_t ino) {
    return static_cast<uint64_t>(ino) * 0x9e3779b97f4a7c15ULL ^ static_cast<uint64_t>(dev);
  }
  void scanHidden();
  void scanHiddenByGlob();
  // mayLinkHidden: a multiply-linked file can share its inode with a file
  // hidden by a glob only if the user could have made the link: it lies in
  // a scanned (user-writable or home) tree, or the user owns it. Files of
  // the system (root-owned, outside those trees) never wait for the scan.
  bool mayLinkHidden(const std::string& path, const struct stat& st) const {
    for (const std::string& r : scan_roots_) {
      if (path == r || (path.size() > r.size() && path.starts_with(r) && path[r.size()] == '/')) {
        return true;
      }
    }
    return st.st_uid == geteuid() && geteuid() != 0;
  }
  // startScanLocked starts the walk once; hidden_mu_ is held.
  void startScanLocked() {
    if (!scan_started_ && !stopping_.load()) {
      try {
        scan_thread_ = std::thread([this] { scanHiddenByGlob(); });
        scan_started_ = true;
      } catch (const std::system_error&) {
        // No thread (the user's process limit): the waiting lookup finds
        // the walk not done and refuses the file; a later one tries again.
      }
    }
  }
  // scanned starts the walk for files hidden by a glob (scanHiddenByGlob)
  // once, the first time a lookup of a multiply-linked file needs it, waits
  // for it, and says whether it covered every tree (false when it ran out
  // of budget or the view is stopping). It is not run at the start: it
  // covers every read-write tree (a home's caches can hold hundreds of
  // thousands of files), and run eagerly it took ~55 ms of CPU and ~23 ms
  // of every `guard -- true` here from other work on two cores, for files
  // with a second name that most sessions never look up.
  bool scanned() {
    std::unique_lock<std::mutex> lock(hidden_mu_);
    startScanLocked();
    scan_cv_.wait(lock, [this] { return scan_done_ || !scan_started_ || stopping_.load(); });
    return scan_done_ && !scan_incomplete_;
  }
  // resolve looks NAME up in PARENT for lookup and readdirplus. Returns 0
  // with OUT holding a node, counted once, and its attributes; ENOENT, with
  // OUT->entry_timeout set when the kernel may cache the absence; or another
  // errno. LISTING (readdirplus) skips the first-access audit: the agent
  // only listed the name.
  int resolve(fuse_req_t req, Node* parent, const char* name, bool listing,
              fuse_entry_param* out);
  NodeFd fdOf(Node* n);
  // openNode opens N's host object for I/O with the open FLAGS; returns the
  // descriptor or -errno. A regular file is opened by name from its parent
  // (two calls fewer than through an O_PATH descriptor and /proc), checked
  // to be the node's object still; O_NONBLOCK, until then, keeps a FIFO the
  // host swapped in from blocking the worker.
  int openNode(Node* n, int flags);
  // attachLocked returns PARENT's child NAME for the object ST, reusing the
  // node when it is the same object and replacing it when not; FD (may be
  // -1) is kept for directories, synthetic and overlay nodes, else closed.
  // Returns null when out of memory. Callers hold mu_ and count the lookup.
  Node* attachLocked(Node* parent, const char* name, const struct stat& st, int fd,
                     bool synthetic, bool overlay);
  void dropLocked(Node* n, uint64_t count);

  const policy::Policy& policy_;
  policy::AuditSink* sink_;
  ViewOptions opts_;
  Node root_;
  int empty_dir_fd_ = -1;  // what synthetic directories show
  std::vector<std::pair<std::string, int>> overlay_fds_;  // path -> sealed memfd
  std::string empty_dir_;

  std::mutex mu_;  // guards the node tree: children maps, parent/name, nlookup

  // viewIno returns the inode number the view reports for the host's
  // (DEV, INO), or for node N when it is synthetic. The kernel gives every
  // file of a FUSE mount the mount's own device, so host inode numbers from
  // different filesystems would collide, and programs that identify files
  // by (device, inode) (virtiofsd in VM mode, tar, du, cp -a) would take
  // one file for another. Hard links keep one number.
  uint64_t viewIno(dev_t dev, ino_t ino, const Node* n);
  std::mutex ino_mu_;                        // guards devs_ and big_inos_; leaf lock
  std::vector<dev_t> devs_;                  // host devices seen, by index
  std::map<std::pair<dev_t, ino_t>, uint64_t> big_inos_;  // inodes of 2^48 and over

  std::mutex hidden_mu_;
  std::unordered_set<uint64_t> hidden_inodes_;  // (dev, ino) of hidden files seen
  std::condition_variable scan_cv_;
  bool scan_started_ = false;  // guarded by hidden_mu_
  bool scan_done_ = false;     // guarded by hidden_mu_
  bool scan_incomplete_ = false;  // guarded by hidden_mu_: out of budget, or stopped
  std::thread scan_thread_;
  std::vector<std::string> scan_roots_;  // read-write roots, then read-only roots in home

  fuse_session* se_ = nullptr;
  std::thread loop_;
  std::atomic<bool> loop_error_{false};
  std::atomic<bool> stopping_{false};
  bool host_mounted_ = false;
  bool writeback_ = false;  // the kernel caches writes (FUSE_CAP_WRITEBACK_CACHE)
};

NodeFd View::fdOf(Node* n) {
  if (n->fd >= 0) {
    return NodeFd(n->fd, false, 0);
  }
  Node* parent;
  std::string name;
  {
    std::lock_guard<std::mutex> lock(mu_);
    parent = n->parent;
    name = n->name;
  }
  if (parent == nullptr) {
    return NodeFd(-1, false, ESTALE);  // removed or replaced since it was looked up
  }
  int fd = openat(parent->fd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    return NodeFd(-1, false, errno == ENOENT ? ESTALE : errno);
  }
  struct stat st {};
  if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != n->dev ||
      st.st_ino != n->ino) {
    close(fd);
    return NodeFd(-1, false, ESTALE);  // the name now holds another object
  }
  return NodeFd(fd, true, 0);
}

std::string View::pathOfLocked(const Node* n) const {
  if (n == &root_) {
    return "/";
  }
  const Node* chain[4096];
  size_t depth = 0;
  for (const Node* p = n; p != nullptr && p != &root_ && depth < 4096; p = p->parent) {
    chain[depth++] = p;
  }
  std::string path;
  while (depth > 0) {
    path += '/';
    path += chain[--depth]->name;
  }
  return path.empty() ? "/" : path;
}

void View::audit(fuse_req_t req, const std::string& path, const Verdict& v, const char* action) {
  if (sink_ == nullptr) {
    return;
  }
  policy::AuditEvent e = opts_.audit_base;
  e.ts = std::chrono::system_clock::now();
  e.mono_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();
  e.component = "fusefs";
  e.surface = "filesystem";
  e.action = action;
  e.target = path;
  e.decision = policy::decisionName(v.decision);
  e.rule = {std::string(v.rule.id), std::string(v.rule.layer), v.rule.source()};
  e.reason = std::string(v.reason);
  if (req != nullptr) {
    e.pid = static_cast<int>(fuse_req_ctx(req)->pid);
  }
  e.details["access"] = policy::accessName(v.access);  // beside the base's ("mode")
  sink_->emit(std::move(e));
}

int View::checkWrite(fuse_req_t req, const std::string& path, const Verdict& v,
                     const char* action, Node* n) {
  if (v.decision == Decision::kDeny) {
    audit(req, path, v, action);
    return v.access == Access::kHidden ? EACCES : EROFS;
  }
  if (v.decision == Decision::kWouldDeny ||
      (opts_.allowed_audit != AllowedAudit::kNone &&
       (n == nullptr || !n->audited_write.exchange(true)))) {
    audit(req, path, v, action);
  }
  return 0;
}

Node* View::attachLocked(Node* parent, const char* name, const struct stat& st, int fd,
                         bool synthetic, bool overlay) {
  auto it = parent->children.find(name);
  if (it != parent->children.end() && it->second->dev == st.st_dev &&
      it->second->ino == st.st_ino) {
    if (fd >= 0) {
      close(fd);
    }
    return it->second;
  }
  Node* n = new (std::nothrow) Node;
  if (n == nullptr) {
    if (fd >= 0) {
      close(fd);
    }
    return nullptr;
  }
  n->parent = parent;
  n->name = name;
  n->dev = st.st_dev;
  n->ino = st.st_ino;
  n->is_dir = S_ISDIR(st.st_mode);
  n->is_reg = S_ISREG(st.st_mode);
  n->synthetic = synthetic;
  n->overlay = overlay;
  // Directories keep a descriptor (children are opened relative to it);
  // other nodes reopen from their parent when asked, so a tree of any size
  // costs no descriptor per file.
  if (n->is_dir || synthetic || overlay) {
    n->fd = fd;
  } else if (fd >= 0) {
    close(fd);
  }
  if (it != parent->children.end()) {
    it->second->parent = nullptr;  // the old object is gone from this name
    it->second = n;
  } else {
    parent->children.emplace(name, n);
  }
  ++parent->nlookup;  // a child keeps its parent alive
  return n;
}

uint64_t View::viewIno(dev_t dev, ino_t ino, const Node* n) {
  constexpr uint64_t kLow = 1ull << 48;
  if (n != nullptr && n->synthetic) {
    // Synthetic directories share one empty host directory; each node is
    // its own object (the top of the range, below the big inodes).
    return (0xFFFEull << 48) | ((reinterpret_cast<uintptr_t>(n) >> 4) & (kLow - 1));
  }
  std::lock_guard<std::mutex> lock(ino_mu_);
  size_t idx = 0;
  while (idx < devs_.size() && devs_[idx] != dev) {
    ++idx;
  }
  if (idx == devs_.size()) {
    devs_.push_back(dev);
  }
  if (ino < kLow && idx < 0xFFFD) {
    return (static_cast<uint64_t>(idx + 1) << 48) | ino;
  }
  auto [it, fresh] = big_inos_.try_emplace({dev, ino}, (0xFFFFull << 48) + big_inos_.size());
  return it->second;
}

void View::lookup(fuse_req_t req, fuse_ino_t parent_ino, const char* name) {
  fuse_entry_param e{};
  int err = resolve(req, node(parent_ino), name, false, &e);
  if (err == 0 || (err == ENOENT && e.entry_timeout > 0)) {
    if (fuse_reply_entry(req, &e) == -ENOENT && e.ino != 0) {
      forget(e.ino, 1);  // the kernel gave up on the request (interrupted): undo the lookup
    }
  } else {
    fuse_reply_err(req, err);
  }
}

int View::resolve(fuse_req_t req, Node* parent, const char* name, bool listing,
                  fuse_entry_param* out) {
  if (parent->synthetic || strcmp(name, "..") == 0 || strcmp(name, ".") == 0) {
    return ENOENT;
  }
  std::string path = join(pathOf(parent), name);
  Verdict v = policy_.file(path, FileOp::kWrite);
  bool synthetic = parent == &root_ &&
                   (isSynthetic(path) || (isMountpoint(path) && v.access == Access::kHidden &&
                                          !policy_.revealsBelow(path)));
  struct stat st {};
  bool traverse = false;
  int overlay_fd = -1;
  for (const auto& [opath, ofd] : overlay_fds_) {
    if (opath == path) {
      overlay_fd = ofd;
    }
  }
  if (overlay_fd >= 0) {
    if (fstat(overlay_fd, &st) != 0) {
      return errno;
    }
  } else if (synthetic) {
    if (fstat(empty_dir_fd_, &st) != 0) {
      return errno;
    }
  } else {
    if (fstatat(parent->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) {
        return errno;
      }
      // PATH and module searches ask again and again
      out->entry_timeout = v.access == Access::kReadWrite ? kNegativeTimeout : kReadOnlyTimeout;
      return ENOENT;
    }
    if (v.access == Access::kHidden) {
      if (S_ISDIR(st.st_mode) && policy_.revealsBelow(path)) {
        traverse = true;
      } else if (v.decision == Decision::kDeny) {
        if (S_ISREG(st.st_mode)) {
          noteHidden(st.st_dev, st.st_ino);
        }
        audit(req, path, policy_.file(path, FileOp::kRead), "lookup");
        out->entry_timeout = kReadOnlyTimeout;  // hidden stays hidden: cache the answer
        return ENOENT;
      }
    }
    // A second name for a hidden file (a hard link made before or during the
    // session) is as hidden as the first.
    // Where the user could have made such a link, the lookup waits for the
    // walk and, if the walk could not cover every tree, refuses the file.
    // Elsewhere (system files: another owner's, outside those trees) it is
    // judged by what is recorded so far, and does not start the walk: that
    // would not cover this lookup, whose answer the kernel then caches,
    // and it cost every VM boot ~200 ms (libc and ld.so have two names on
    // some hosts, and the walk took CPU from the guest's requests).
    bool linked = S_ISREG(st.st_mode) && st.st_nlink > 1;
    bool unknown = linked && mayLinkHidden(path, st) && !scanned();
    if (unknown || (linked && hiddenInode(st.st_dev, st.st_ino))) {
      Verdict hv = v;
      hv.decision = Decision::kDeny;
      hv.access = Access::kHidden;
      hv.reason = unknown ? "multiply-linked, and the walk for hidden files' other names did not "
                            "finish (over 300,000 entries, or the session is ending)"
                          : "hard link to a hidden file";
      audit(req, path, hv, "lookup");
      return ENOENT;
    }
  }
  // Only directories (children are opened relative to them), synthetic and
  // overlay nodes keep a descriptor; a file is reopened from its parent when
  // used, and fdOf checks that it is still the object stat saw here.
  int fd = -1;
  if (overlay_fd >= 0 || synthetic) {
    fd = dup(overlay_fd >= 0 ? overlay_fd : empty_dir_fd_);
    if (fd < 0) {
      return errno;
    }
  } else if (S_ISDIR(st.st_mode)) {
    fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      return errno;
    }
    struct stat st2 {};
    if (fstatat(fd, "", &st2, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 ||
        st2.st_ino != st.st_ino || st2.st_dev != st.st_dev) {
      close(fd);  // replaced between the check and the open: let the kernel retry
      return ESTALE;
    }
  }
  Node* n = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n = attachLocked(parent, name, st, fd, synthetic, overlay_fd >= 0);
    if (n == nullptr) {
      return ENOMEM;
    }
    n->traverse_only = traverse;
    n->write_verdict = synthetic ? Verdict{} : v;
    if (synthetic || overlay_fd >= 0) {
      n->write_verdict.decision = Decision::kDeny;
      n->write_verdict.access = Access::kReadOnly;
    }
    ++n->nlookup;
  }
  if (v.decision == Decision::kWouldDeny && v.access == Access::kHidden && !traverse) {
    audit(req, path, policy_.file(path, FileOp::kRead), "lookup");
  } else if (opts_.allowed_audit == AllowedAudit::kFirst && !listing &&
             !n->audited_any.exchange(true)) {
    audit(req, path, policy_.file(path, FileOp::kRead), "lookup");
  }
  if (traverse) {
    st.st_mode = (st.st_mode & ~07777) | 0555;
  }
  out->ino = reinterpret_cast<fuse_ino_t>(n);
  out->attr = st;
  out->attr.st_ino = viewIno(st.st_dev, st.st_ino, n);
  out->attr_timeout = timeoutFor(n->write_verdict);
  out->entry_timeout = out->attr_timeout;
  return 0;
}

void View::dropLocked(Node* n, uint64_t count) {
  while (n != nullptr && n != &root_) {
    n->nlookup = n->nlookup > count ? n->nlookup - count : 0;
    if (n->nlookup != 0) {
      return;
    }
    Node* parent = n->parent;
    if (parent != nullptr) {
      auto it = parent->children.find(n->name);
      if (it != parent->children.end() && it->second == n) {
        parent->children.erase(it);
      }
    }
    for (auto& [child_name, child] : n->children) {
      child->parent = nullptr;  // cannot happen: a child holds a count on us
    }
    if (n->fd >= 0) {
      close(n->fd);
    }
    delete n;
    n = parent;
    count = 1;  // release the count the child held on its parent
  }
}

void View::forget(fuse_ino_t ino, uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  dropLocked(node(ino), n);
}

void View::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Node* n = node(ino);
  struct stat st {};
  if (fi != nullptr) {
    if (fstat(static_cast<int>(fi->fh), &st) != 0) {
      fuse_reply_err(req, errno);
      return;
    }
  } else {
    NodeFd fd = fdOf(n);
    if (fd.get() < 0) {
      fuse_reply_err(req, fd.err());
      return;
    }
    if (fstatat(fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      fuse_reply_err(req, errno);
      return;
    }
  }
  if (n->traverse_only) {
    st.st_mode = (st.st_mode & ~07777) | 0555;
  }
  st.st_ino = viewIno(st.st_dev, st.st_ino, n);
  fuse_reply_attr(req, &st, timeoutFor(n->write_verdict));
}

void View::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                   fuse_file_info* fi) {
  Node* n = node(ino);
  std::string path = pathOf(n);
  const char* action = (to_set & FUSE_SET_ATTR_SIZE)                       ? "truncate"
                       : (to_set & FUSE_SET_ATTR_MODE)                     ? "chmod"
                       : (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) ? "chown"
                                                                            : "utimes";
  Verdict v = n->traverse_only ? policy_.file(path, FileOp::kWrite) : n->write_verdict;
  if (n->traverse_only) {
    v.decision = Decision::kDeny;
  }
  if (int err = checkWrite(req, path, v, action, n); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  NodeFd nfd = fdOf(n);
  if (nfd.get() < 0) {
    fuse_reply_err(req, nfd.err());
    return;
  }
  std::string proc = procPath(nfd.get());
  int rc = 0;
  if (to_set & FUSE_SET_ATTR_MODE) {
    rc = fi != nullptr ? fchmod(static_cast<int>(fi->fh), attr->st_mode)
                       : chmod(proc.c_str(), attr->st_mode);
  }
  if (rc == 0 && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
    uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
    gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
    rc = fchownat(nfd.get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  }
  if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
    rc = fi != nullptr ? ftruncate(static_cast<int>(fi->fh), attr->st_size)
                       : truncate(proc.c_str(), attr->st_size);
  }
  if (rc == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
    struct timespec tv[2];
    tv[0].tv_sec = 0;
    tv[1].tv_sec = 0;
    tv[0].tv_nsec = UTIME_OMIT;
    tv[1].tv_nsec = UTIME_OMIT;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
      tv[0].tv_nsec = UTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
      tv[0] = attr->st_atim;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
      tv[1].tv_nsec = UTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
      tv[1] = attr->st_mtim;
    }
    rc = fi != nullptr ? futimens(static_cast<int>(fi->fh), tv)
                       : utimensat(AT_FDCWD, proc.c_str(), tv, 0);
  }
  if (rc != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  getattr(req, ino, fi);
}

void View::readlink(fuse_req_t req, fuse_ino_t ino) {
  char buf[PATH_MAX + 1];
  NodeFd fd = fdOf(node(ino));
  if (fd.get() < 0) {
    fuse_reply_err(req, fd.err());
    return;
  }
  ssize_t len = readlinkat(fd.get(), "", buf, sizeof(buf));
  if (len < 0) {
    fuse_reply_err(req, errno);
    return;
  }
  if (static_cast<size_t>(len) == sizeof(buf)) {
    fuse_reply_err(req, ENAMETOOLONG);
    return;
  }
  buf[len] = '\0';
  fuse_reply_readlink(req, buf);
}

void View::makeNode(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode,
                    dev_t rdev, const char* link, const char* action) {
  Node* parent = node(parent_ino);
  std::string path = join(pathOf(parent), name);
  Verdict v = policy_.file(path, FileOp::kWrite);
  if (parent->synthetic) {
    v.decision = Decision::kDeny;
  }
  if (int err = checkWrite(req, path, v, action, nullptr); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  int rc;
  if (link != nullptr) {
    rc = symlinkat(link, parent->fd, name);
  } else if (S_ISDIR(mode)) {
    rc = mkdirat(parent->fd, name, mode);
  } else {
    rc = mknodat(parent->fd, name, mode, rdev);
  }
  if (rc != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  lookup(req, parent_ino, name);
}

void View::unlink(fuse_req_t req, fuse_ino_t parent_ino, const char* name, bool dir) {
  Node* parent = node(parent_ino);
  std::string path = join(pathOf(parent), name);
  Verdict v = policy_.file(path, FileOp::kWrite);
  if (v.access == Access::kHidden && v.decision == Decision::kDeny) {
    audit(req, path, v, dir ? "rmdir" : "unlink");
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (int err = checkWrite(req, path, v, dir ? "rmdir" : "unlink", nullptr); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_err(req, unlinkat(parent->fd, name, dir ? AT_REMOVEDIR : 0) == 0 ? 0 : errno);
}

void View::rename(fuse_req_t req, fuse_ino_t parent_ino, const char* name,
                  fuse_ino_t newparent_ino, const char* newname, unsigned flags) {
  Node* parent = node(parent_ino);
  Node* newparent = node(newparent_ino);
  std::string from = join(pathOf(parent), name);
  std::string to = join(pathOf(newparent), newname);
  Verdict vf = policy_.file(from, FileOp::kWrite);
  Verdict vt = policy_.file(to, FileOp::kWrite);
  // Both names must be writable: renaming a read-only file away, or over a
  // read-only file, or into a hidden name, all change what the policy protects.
  if (int err = checkWrite(req, from, vf, "rename", nullptr); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  if (int err = checkWrite(req, to, vt, "rename", nullptr); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  // A directory moved to another name takes the paths below it along: each
  // must keep its decision. RENAME_EXCHANGE moves the target too, the other
  // way.
  const bool exchange = (flags & RENAME_EXCHANGE) != 0;
  auto keepsDecisions = [&](int dirfd, const char* leaf, const std::string& old_path,
                            const std::string& new_path, const Verdict& verdict) {
    struct stat st {};
    if (fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode) ||
        policy_.renameKeepsDecisions(old_path, new_path)) {
      return true;
    }
    Verdict v = verdict;
    v.decision = Decision::kDeny;
    v.reason = "the directory holds paths whose rules depend on its name";
    audit(req, old_path, v, "rename");
    return false;
  };
  if (!keepsDecisions(parent->fd, name, from, to, vf) ||
      (exchange && !keepsDecisions(newparent->fd, newname, to, from, vt))) {
    fuse_reply_err(req, EXDEV);  // mv and friends fall back to copying file by file
    return;
  }
  if (renameat2(parent->fd, name, newparent->fd, newname, flags) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto take = [](Node* dir, const char* leaf) -> Node* {
      auto it = dir->children.find(leaf);
      if (it == dir->children.end()) {
        return nullptr;
      }
      Node* n = it->second;
      dir->children.erase(it);
      return n;
    };
    Node* moved = take(parent, name);
    Node* displaced = take(newparent, newname);
    // A moved node keeps its lookup count; the count it held on its old
    // parent moves to the new one.
    auto place = [&](Node* n, Node* from_dir, Node* to_dir, const char* leaf, const Verdict& w) {
      n->parent = to_dir;
      n->name = leaf;
      n->write_verdict = w;
      to_dir->children.emplace(leaf, n);
      ++to_dir->nlookup;
      dropLocked(from_dir, 1);
    };
    if (moved != nullptr) {
      place(moved, parent, newparent, newname, vt);
    }
    if (displaced != nullptr && exchange) {
      place(displaced, newparent, parent, name, vf);
    } else if (displaced != nullptr) {
      displaced->parent = nullptr;  // replaced: only its open handles still reach it
    }
  }
  fuse_reply_err(req, 0);
}

void View::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent_ino, const char* newname) {
  Node* n = node(ino);
  Node* newparent = node(newparent_ino);
  std::string from = pathOf(n);
  std::string to = join(pathOf(newparent), newname);
  if (int err = checkWrite(req, from, n->write_verdict, "link", n); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  if (int err = checkWrite(req, to, policy_.file(to, FileOp::kWrite), "link", nullptr);
      err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  NodeFd nfd = fdOf(n);
  if (nfd.get() < 0) {
    fuse_reply_err(req, nfd.err());
    return;
  }
  std::string proc = procPath(nfd.get());
  if (linkat(AT_FDCWD, proc.c_str(), newparent->fd, newname, AT_SYMLINK_FOLLOW) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  lookup(req, newparent_ino, newname);
}

void View::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Node* n = node(ino);
  int acc = fi->flags & O_ACCMODE;
  bool writes = acc == O_WRONLY || acc == O_RDWR || (fi->flags & O_TRUNC) != 0;
  if (writes || n->traverse_only) {
    Verdict v = n->write_verdict;
    if (n->traverse_only) {
      v.decision = Decision::kDeny;
    }
    if (writes) {
      if (int err = checkWrite(req, pathOf(n), v, "open", n); err != 0) {
        fuse_reply_err(req, err);
        return;
      }
    }
  }
  if (opts_.allowed_audit == AllowedAudit::kFirst && !writes && !n->audited_any.exchange(true)) {
    audit(req, pathOf(n), policy_.file(pathOf(n), FileOp::kRead), "open");
  }
  int flags = fi->flags;
  if (writes && writeback_) {
    // The writeback cache reads the pages around a partial write through any
    // descriptor that writes, so a write-only open reads too on the host: a
    // node is a name the policy shows, which it lets the agent read. The
    // kernel places appended data itself, at offsets it sends.
    if (acc == O_WRONLY && policy_.file(pathOf(n), FileOp::kRead).decision != Decision::kDeny) {
      flags = (flags & ~O_ACCMODE) | O_RDWR;
    }
    flags &= ~O_APPEND;
  }
  int fd = openNode(n, flags);
  if (fd == -EACCES && flags != fi->flags) {
    fd = openNode(n, fi->flags & ~O_APPEND);  // the host grants the user writing only
  }
  if (fd < 0) {
    fuse_reply_err(req, -fd);
    return;
  }
  fi->fh = static_cast<uint64_t>(fd);
  // Every file keeps its page cache across opens: writes go through the
  // view, and a change made on the host shows once the attributes expire
  // (the kernel drops cached pages when size or mtime changed).
  fi->keep_cache = 1;
  // A descriptor that cannot write has nothing to flush on close.
  fi->noflush = writes ? 0 : 1;
  fuse_reply_open(req, fi);
}

int View::openNode(Node* n, int flags) {
  flags = (flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL)) | O_CLOEXEC;
  if (!n->is_reg || n->fd >= 0) {
    NodeFd nfd = fdOf(n);
    if (nfd.get() < 0) {
      return -nfd.err();
    }
    int fd = ::open(procPath(nfd.get()).c_str(), flags);
    return fd < 0 ? -errno : fd;
  }
  int dir_fd;
  std::string name;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (n->parent == nullptr) {
      return -ESTALE;  // removed or replaced since it was looked up
    }
    dir_fd = n->parent->fd;
    name = n->name;
  }
  int fd = openat(dir_fd, name.c_str(), flags | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    return errno == ENOENT || errno == ELOOP ? -ESTALE : -errno;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_dev != n->dev || st.st_ino != n->ino) {
    close(fd);
    return -ESTALE;  // the name now holds another object
  }
  if ((flags & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, flags) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

void View::create(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode,
                  fuse_file_info* fi) {
  Node* parent = node(parent_ino);
  std::string path = join(pathOf(parent), name);
  Verdict v = policy_.file(path, FileOp::kWrite);
  if (parent->synthetic) {
    v.decision = Decision::kDeny;
  }
  if (int err = checkWrite(req, path, v, "create", nullptr); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  int flags = fi->flags;
  if (writeback_) {
    flags = (flags & ~(O_ACCMODE | O_APPEND)) | O_RDWR;  // as in open(): a new file may be read
  }
  int fd = openat(parent->fd, name, flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0 && errno == EACCES && flags != fi->flags) {
    fd = openat(parent->fd, name, (fi->flags & ~O_APPEND) | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                mode);
  }
  if (fd < 0) {
    fuse_reply_err(req, errno);
    return;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    fuse_reply_err(req, e);
    return;
  }
  Node* n = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n = attachLocked(parent, name, st, -1, false, false);
    if (n == nullptr) {
      close(fd);
      fuse_reply_err(req, ENOMEM);
      return;
    }
    n->write_verdict = v;
    ++n->nlookup;
  }
  fi->fh = static_cast<uint64_t>(fd);
  fuse_entry_param e{};
  e.ino = reinterpret_cast<fuse_ino_t>(n);
  e.attr = st;
  e.attr.st_ino = viewIno(st.st_dev, st.st_ino, n);
  e.attr_timeout = timeoutFor(v);
  e.entry_timeout = e.attr_timeout;
  fi->keep_cache = 1;
  fuse_reply_create(req, &e, fi);
}

void View::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Node* n = node(ino);
  auto* d = new (std::nothrow) DirHandle;
  if (d == nullptr) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  int fd = openat(n->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || (d->dir = fdopendir(fd)) == nullptr) {
    int e = errno;
    if (fd >= 0) {
      close(fd);
    }
    delete d;
    fuse_reply_err(req, e);
    return;
  }
  fi->fh = reinterpret_cast<uint64_t>(d);
  fi->cache_readdir = 0;
  fuse_reply_open(req, fi);
}

void View::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                   bool plus) {
  Node* n = node(ino);
  auto* d = reinterpret_cast<DirHandle*>(fi->fh);
  char* buf = static_cast<char*>(calloc(1, size));
  if (buf == nullptr) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  if (off != d->offset) {
    seekdir(d->dir, off);
    d->entry = nullptr;
    d->offset = off;
  }
  std::string dir = pathOf(n);
  size_t used = 0;
  bool synthetic_dir = n->synthetic;
  std::vector<fuse_ino_t> counted;  // nodes this reply hands the kernel a lookup of
  for (;;) {
    if (d->entry == nullptr) {
      errno = 0;
      d->entry = ::readdir(d->dir);
      if (d->entry == nullptr) {
        break;
      }
    }
    struct dirent* ent = d->entry;
    off_t next = ent->d_off;
    bool dot = strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0;
    bool show = !synthetic_dir;
    if (show && !dot) {
      std::string path = join(dir, ent->d_name);
      if (n == &root_ && (isSynthetic(path) || isMountpoint(path))) {
        show = true;
      } else {
        Verdict v = policy_.file(path, FileOp::kRead);
        if (v.decision == Decision::kDeny) {
          bool may_be_dir = ent->d_type == DT_DIR || ent->d_type == DT_UNKNOWN;
          show = may_be_dir && policy_.revealsBelow(path);
          if (!show && ent->d_type == DT_REG) {
            noteHidden(n->dev, ent->d_ino);
          }
        }
      }
    }
    if (show) {
      fuse_entry_param e{};
      e.attr.st_ino = viewIno(n->dev, ent->d_ino, nullptr);
      e.attr.st_mode = static_cast<mode_t>(ent->d_type) << 12;
      size_t len;
      if (!plus) {
        len = fuse_add_direntry(req, buf + used, size - used, ent->d_name, &e.attr, next);
      } else if (fuse_add_direntry_plus(req, nullptr, 0, ent->d_name, nullptr, 0) >
                 size - used) {
        break;  // keep d->entry for the next call, before resolve counts a lookup
      } else {
        // Directories are left to a lookup of their own: their nodes hold a
        // descriptor, and a listing should not open one per subdirectory.
        // Names the kernel already looked up need nothing new (git status
        // stats every file before it lists). An entry with node id 0 is a
        // plain name to the kernel.
        bool known = false;
        if (!dot && ent->d_type != DT_DIR) {
          std::lock_guard<std::mutex> lock(mu_);
          known = n->children.count(ent->d_name) != 0;
        }
        if (!dot && ent->d_type != DT_DIR && !known) {
          fuse_entry_param plain = e;
          int err = resolve(req, n, ent->d_name, true, &e);
          if (err == ENOENT) {
            d->entry = nullptr;  // hidden after all (a link to a hidden file), or gone
            d->offset = next;
            continue;
          }
          if (err != 0 || e.ino == 0) {
            e = plain;  // the kernel's own lookup will meet the error
          } else {
            counted.push_back(e.ino);
          }
        }
        len = fuse_add_direntry_plus(req, buf + used, size - used, ent->d_name, &e, next);
      }
      if (len > size - used) {
        break;  // keep d->entry for the next call
      }
      used += len;
    }
    d->entry = nullptr;
    d->offset = next;
  }
  if (fuse_reply_buf(req, buf, used) != 0) {
    for (fuse_ino_t counted_ino : counted) {
      forget(counted_ino, 1);  // the kernel dropped the reply: undo its lookups
    }
  }
  free(buf);
}

void View::statfs(fuse_req_t req, fuse_ino_t ino) {
  struct statvfs s {};
  NodeFd fd = fdOf(node(ino));
  if (fd.get() < 0) {
    fuse_reply_err(req, fd.err());
    return;
  }
  if (fstatvfs(fd.get(), &s) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  fuse_reply_statfs(req, &s);
}

void View::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                    size_t size, int flags) {
  Node* n = node(ino);
  Verdict v = n->write_verdict;
  if (n->traverse_only || n->synthetic) {
    v.decision = Decision::kDeny;
  }
  if (int err = checkWrite(req, pathOf(n), v, "setxattr", n); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  NodeFd nfd = fdOf(n);
  if (nfd.get() < 0) {
    fuse_reply_err(req, nfd.err());
    return;
  }
  int rc = ::setxattr(procPath(nfd.get()).c_str(), name, value, size, flags);
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}

void View::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Node* n = node(ino);
  Verdict v = n->write_verdict;
  if (n->traverse_only || n->synthetic) {
    v.decision = Decision::kDeny;
  }
  if (int err = checkWrite(req, pathOf(n), v, "removexattr", n); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  NodeFd nfd = fdOf(n);
  if (nfd.get() < 0) {
    fuse_reply_err(req, nfd.err());
    return;
  }
  int rc = ::removexattr(procPath(nfd.get()).c_str(), name);
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}

void View::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Node* n = node(ino);
  NodeFd nfd = fdOf(n);
  if (nfd.get() < 0) {
    fuse_reply_err(req, nfd.err());
    return;
  }
  std::string proc = procPath(nfd.get());
  if (size == 0) {
    ssize_t len = ::getxattr(proc.c_str(), name, nullptr, 0);
    len < 0 ? fuse_reply_err(req, errno) : fuse_reply_xattr(req, static_cast<size_t>(len));
    return;
  }
  std::string buf(size, '\0');
  ssize_t len = ::getxattr(proc.c_str(), name, buf.data(), size);
  len < 0 ? fuse_reply_err(req, errno) : fuse_reply_buf(req, buf.data(), static_cast<size_t>(len));
}

void View::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Node* n = node(ino);
  NodeFd nfd = fdOf(n);
  if (nfd.get() < 0) {
    fuse_reply_err(req, nfd.err());
    return;
  }
  std::string proc = procPath(nfd.get());
  if (size == 0) {
    ssize_t len = ::listxattr(proc.c_str(), nullptr, 0);
    len < 0 ? fuse_reply_err(req, errno) : fuse_reply_xattr(req, static_cast<size_t>(len));
    return;
  }
  std::string buf(size, '\0');
  ssize_t len = ::listxattr(proc.c_str(), buf.data(), size);
  len < 0 ? fuse_reply_err(req, errno) : fuse_reply_buf(req, buf.data(), static_cast<size_t>(len));
}

void View::init(fuse_conn_info* conn) {
  // Splice moves file data without copying through the daemon.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) {
    conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
  }
  if (conn->capable & FUSE_CAP_SPLICE_READ) {
    conn->want |= FUSE_CAP_SPLICE_READ;
  }
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) {
    conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  }
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) {
    conn->want |= FUSE_CAP_CACHE_SYMLINKS;  // symlinks change only through the view or the host
  }
  if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV) {
    conn->want |= FUSE_CAP_HANDLE_KILLPRIV;  // the host kernel clears suid bits on write itself
  }
  // Listings carry each file's attributes (readdirplus), always rather than
  // when the kernel guesses they are wanted: find and git read a whole
  // directory before they stat its files, and each lookup saved is a round trip.
  if (conn->capable & FUSE_CAP_READDIRPLUS) {
    conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_READDIRPLUS_AUTO);
  }
  // The writeback cache: writes land in the page cache and reach the host in
  // large batches, and a file read right after it was written is served
  // from memory. See ViewOptions::writeback_cache for what it costs.
  if (opts_.writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
    conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    writeback_ = true;
  }
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_EXPORT_SUPPORT);
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
}

namespace {

// forEachHiddenFile calls FN with the stat of every regular file below the
// policy's hidden literal paths (~/.ssh), at most BUDGET entries in all.
template <typename Fn>
void forEachHiddenFile(const policy::Policy& policy, size_t budget, Fn fn) {
  for (const auto& pp : policy.pathPrefixes()) {
    if (pp.access != Access::kHidden || pp.glob || budget == 0) {
      continue;
    }
    std::vector<std::string> stack = {pp.prefix};
    while (!stack.empty() && budget > 0) {
      std::string p = stack.back();
      stack.pop_back();
      struct stat st {};
      if (lstat(p.c_str(), &st) != 0) {
        continue;
      }
      --budget;
      if (S_ISREG(st.st_mode)) {
        fn(st);
      } else if (S_ISDIR(st.st_mode)) {
        DIR* d = ::opendir(p.c_str());
        if (d == nullptr) {
          continue;
        }
        while (struct dirent* e = ::readdir(d)) {
          if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            stack.push_back(p + "/" + e->d_name);
          }
        }
        closedir(d);
      }
    }
  }
}

struct HostMount {
  std::string point;
  bool fuse = false;
};

// hostMounts lists the mount points of this mount namespace.
std::vector<HostMount> hostMounts() {
  std::vector<HostMount> out;
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    // id parent major:minor root mountpoint options... - fstype source super
    std::istringstream in(line);
    std::string id, parent, devno, root, point;
    in >> id >> parent >> devno >> root >> point;
    size_t dash = line.find(" - ");
    HostMount m;
    m.fuse = dash != std::string::npos && line.compare(dash + 3, 4, "fuse") == 0;
    for (size_t i = 0; i < point.size(); ++i) {
      // mountinfo escapes space, tab, newline, backslash as \ooo
      if (point[i] == '\\' && i + 3 < point.size()) {
        m.point += static_cast<char>(std::stoi(point.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        m.point += point[i];
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

// fuseMounts lists the mount points of FUSE filesystems (this view, other
// sessions' views, sshfs): a walk must not enter them, since a view that
// is stopping never answers, and what they hold is not the host's.
std::unordered_set<std::string> fuseMounts() {
  std::unordered_set<std::string> out;
  for (HostMount& m : hostMounts()) {
    if (m.fuse) {
      out.insert(std::move(m.point));
    }
  }
  return out;
}

bool isUnder(const std::string& path, const std::string& dir) {
  return path.size() > dir.size() && path.starts_with(dir) &&
         (dir == "/" || path[dir.size()] == '/');
}

}  // namespace

void View::scanHidden() {
  // Hidden literal paths (~/.ssh): every file below them, before serving.
  forEachHiddenFile(policy_, 100000,
                    [this](const struct stat& st) { noteHidden(st.st_dev, st.st_ino); });
}

std::vector<Bind> planBinds(const policy::Policy& policy, const ViewOptions& options,
                            bool writable_trees) {
  constexpr size_t kMaxBinds = 256;  // beyond this, the view serves the rest
  const std::vector<HostMount> mounts = hostMounts();
  std::unordered_set<dev_t> hidden_devs;   // a file a rule hides lies there
  std::unordered_set<dev_t> linked_devs;   // ... and has a second name
  forEachHiddenFile(policy, 100000, [&](const struct stat& st) {
    hidden_devs.insert(st.st_dev);
    if (st.st_nlink > 1) {
      linked_devs.insert(st.st_dev);
    }
  });
  auto excluded = [&](const std::string& p) {
    for (const std::string& s : options.synthetic) {
      if (p == s) {
        return true;
      }
    }
    for (const std::string& s : options.mountpoints) {
      if (p == s) {
        return true;
      }
    }
    for (const HostMount& m : mounts) {
      if (m.fuse && (m.point == p || isUnder(p, m.point))) {
        return true;
      }
    }
    return p == options.mountpoint || isUnder(options.mountpoint, p);
  };
  // holdsMount: a mount point lies below DIR, which a bind would cover.
  auto holdsMount = [&](const std::string& dir) {
    for (const HostMount& m : mounts) {
      if (isUnder(m.point, dir)) {
        return true;
      }
    }
    return false;
  };
  // layerOf: the view's overlays at or below PATH, relative to it.
  auto layerOf = [&](const std::string& path) {
    std::vector<Overlay> layer;
    for (const Overlay& o : options.overlays) {
      if (o.path == path || isUnder(o.path, path)) {
        layer.push_back({o.path.substr(std::min(o.path.size(), path.size() + 1)), o.fd});
      }
    }
    return layer;
  };
  std::vector<Bind> out;
  std::vector<std::string> stack = {"/"};
  while (!stack.empty() && out.size() < kMaxBinds) {
    std::string dir = std::move(stack.back());
    stack.pop_back();
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
      continue;
    }
    std::vector<std::string> children;
    while (struct dirent* e = ::readdir(d)) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
        continue;
      }
      if (e->d_type == DT_DIR || e->d_type == DT_REG || e->d_type == DT_UNKNOWN) {
        children.push_back((dir == "/" ? "" : dir) + "/" + e->d_name);
      }
    }
    closedir(d);
    // Files are bound only where the directory is read-only too: a mount
    // point cannot be renamed or removed, which a writable directory allows.
    Verdict dir_w = policy.file(dir, FileOp::kWrite);
    bool files = dir_w.access == Access::kReadOnly && dir_w.decision == Decision::kDeny;
    for (const std::string& path : children) {
      struct stat st {};
      if (excluded(path) || lstat(path.c_str(), &st) != 0 ||
          !(S_ISDIR(st.st_mode) || (files && S_ISREG(st.st_mode)))) {
        continue;
      }
      Verdict w = policy.file(path, FileOp::kWrite);
      policy::Policy::Subtree kind = policy.subtree(path);
      if (kind == policy::Policy::Subtree::kMixed) {
        continue;
      }
      bool ro = w.access == Access::kReadOnly && w.decision == Decision::kDeny &&
                st.st_uid == 0 && (st.st_mode & 022) == 0 && linked_devs.count(st.st_dev) == 0;
      bool rw = writable_trees && S_ISDIR(st.st_mode) && w.access == Access::kReadWrite &&
                w.decision == Decision::kAllow && hidden_devs.count(st.st_dev) == 0;
      auto layer = layerOf(path);
      bool layered = ro && S_ISDIR(st.st_mode);  // only a read-only directory takes a layer
      if (kind == policy::Policy::Subtree::kSplit || holdsMount(path) ||
          (!layer.empty() && !layered)) {
        if (S_ISDIR(st.st_mode) && (w.access != Access::kHidden || policy.revealsBelow(path))) {
          stack.push_back(path);
        }
        continue;
      }
      if ((ro || rw) && out.size() < kMaxBinds) {
        out.push_back(Bind{path, rw, std::move(layer)});
      }
    }
  }
  return out;
}

void View::scanHiddenByGlob() {
  // Files hidden by a glob (**/.env) can sit anywhere visible. Walk the
  // visible literal roots, read-write first, and record every hidden file,
  // so that a name it has or gets elsewhere is hidden too. Lookups of
  // multiply-linked files wait for this.
  bool any_glob = false;
  for (const auto& pp : policy_.pathPrefixes()) {
    any_glob = any_glob || (pp.access == Access::kHidden && pp.glob);
  }
  std::vector<std::string> roots;
  if (any_glob) {
    roots = scan_roots_;
  }
  size_t budget = 300000;
  bool incomplete = false;  // a directory that could hold one was not read
  std::unordered_set<std::string> done;
  const std::unordered_set<std::string> skip = fuseMounts();
  for (const std::string& root : roots) {
    bool covered = false;
    for (const std::string& d : done) {
      covered = covered || root == d || (root.size() > d.size() && root.starts_with(d) &&
                                         root[d.size()] == '/');
    }
    if (covered || stopping_.load()) {
      continue;
    }
    done.insert(root);
    std::vector<std::string> stack = {root};
    while (!stack.empty() && budget > 0 && !stopping_.load()) {
      std::string dir = stack.back();
      stack.pop_back();
      DIR* d = ::opendir(dir.c_str());
      if (d == nullptr) {
        // A directory gone meanwhile holds nothing. One the walk cannot
        // read that the user owns (the agent can chmod it), or whose path
        // grew too long, could hide a file: the walk is then incomplete.
        struct stat dst {};
        if (errno == ENAMETOOLONG || errno == EMFILE || errno == ENFILE || errno == ENOMEM ||
            (errno == EACCES && lstat(dir.c_str(), &dst) == 0 && dst.st_uid == geteuid())) {
          incomplete = true;
        }
        continue;
      }
      while (struct dirent* e = ::readdir(d)) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || --budget == 0) {
          if (budget == 0) {
            break;
          }
          continue;
        }
        std::string path = dir + "/" + e->d_name;
        unsigned char type = e->d_type;
        struct stat est {};
        if (type == DT_UNKNOWN) {  // a filesystem that does not say: ask
          type = fstatat(dirfd(d), e->d_name, &est, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(est.st_mode)
                     ? DT_DIR
                     : DT_UNKNOWN;
        }
        if (type == DT_DIR) {
          if (skip.count(path) == 0 && path != opts_.mountpoint) {
            stack.push_back(std::move(path));
          }
          continue;
        }
        if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) {
          continue;
        }
        if (policy_.file(path, FileOp::kRead).access != Access::kHidden) {
          continue;
        }
        // Every one, not only those with other names yet: the host may link
        // one elsewhere during the session.
        struct stat st {};
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
          noteHidden(st.st_dev, st.st_ino);
        }
      }
      closedir(d);
    }
  }
  {
    std::lock_guard<std::mutex> lock(hidden_mu_);
    scan_done_ = true;
    scan_incomplete_ = stopping_.load() || budget == 0 || incomplete;
  }
  scan_cv_.notify_all();
}

// ---- mounting --------------------------------------------------------------

namespace {

// default_permissions: the kernel checks mode bits against the caller, so
// the view never grants more than the host would.
constexpr const char* kMountOptions = "default_permissions,fsname=guard,subtype=guard";

// fusermountFd runs fusermount3 to mount MOUNTPOINT and returns the
// /dev/fuse descriptor it passes back over _FUSE_COMMFD (libfuse's protocol).
Result<int> fusermountFd(const std::string& mountpoint, const char* options) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("socketpair: ") + strerror(e), e);
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    std::string commfd = std::to_string(sv[1]);
    setenv("_FUSE_COMMFD", commfd.c_str(), 1);
    execlp("fusermount3", "fusermount3", "-o", options, "--", mountpoint.c_str(),
           static_cast<char*>(nullptr));
    _exit(127);
  }
  close(sv[1]);
  char byte = 0;
  struct iovec iov = {&byte, 1};
  char control[CMSG_SPACE(sizeof(int))] = {};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(sv[0], &msg, 0);
  } while (n < 0 && errno == EINTR);
  close(sv[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (n <= 0 || c == nullptr || c->cmsg_type != SCM_RIGHTS) {
    return Error(ErrorCode::kIo,
                 "fusermount3 could not mount the filesystem view on " + mountpoint +
                     " (is the fuse3 package installed and /dev/fuse present?)");
  }
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof(int));
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

}  // namespace

// ---- trampolines ------------------------------------------------------------

namespace {

View* self(fuse_req_t req) { return static_cast<View*>(fuse_req_userdata(req)); }

// guarded runs FN, replying ENOMEM if it throws bad_alloc (STYLE.md §2).
template <typename Fn>
void guarded(fuse_req_t req, Fn&& fn) {
  try {
    fn();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  }
}

void opInit(void* userdata, fuse_conn_info* conn) { static_cast<View*>(userdata)->init(conn); }
void opLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] { self(req)->lookup(req, parent, name); });
}
void opForget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  self(req)->forget(ino, n);
  fuse_reply_none(req);
}
void opForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* f) {
  for (size_t i = 0; i < count; ++i) {
    self(req)->forget(f[i].ino, f[i].nlookup);
  }
  fuse_reply_none(req);
}
void opGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  self(req)->getattr(req, ino, fi);
}
void opSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
               fuse_file_info* fi) {
  guarded(req, [&] { self(req)->setattr(req, ino, attr, to_set, fi); });
}
void opReadlink(fuse_req_t req, fuse_ino_t ino) { self(req)->readlink(req, ino); }
void opMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  guarded(req, [&] { self(req)->makeNode(req, parent, name, mode, rdev, nullptr, "mknod"); });
}
void opMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req,
          [&] { self(req)->makeNode(req, parent, name, mode | S_IFDIR, 0, nullptr, "mkdir"); });
}
void opSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  guarded(req, [&] { self(req)->makeNode(req, parent, name, S_IFLNK, 0, link, "symlink"); });
}
void opUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] { self(req)->unlink(req, parent, name, false); });
}
void opRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] { self(req)->unlink(req, parent, name, true); });
}
void opRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned flags) {
  guarded(req, [&] { self(req)->rename(req, parent, name, newparent, newname, flags); });
}
void opLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  guarded(req, [&] { self(req)->link(req, ino, newparent, newname); });
}
void opOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&] { self(req)->open(req, ino, fi); });
}
void opCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  guarded(req, [&] { self(req)->create(req, parent, name, mode, fi); });
}
void opRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = static_cast<int>(fi->fh);
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}
void opWriteBuf(fuse_req_t req, fuse_ino_t, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
  out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  out.buf[0].fd = static_cast<int>(fi->fh);
  out.buf[0].pos = off;
  ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  n < 0 ? fuse_reply_err(req, static_cast<int>(-n)) : fuse_reply_write(req, static_cast<size_t>(n));
}
void opFlush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  if (self(req)->writeback()) {
    // With the writeback cache the kernel writes dirty pages back before it
    // flushes, and sends a flush on every close, even of a read-only
    // descriptor: ENOSYS stops it asking, saving a round trip per close.
    fuse_reply_err(req, ENOSYS);
    return;
  }
  int fd = dup(static_cast<int>(fi->fh));
  fuse_reply_err(req, fd < 0 ? errno : (close(fd) == 0 ? 0 : errno));
}
void opRelease(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  close(static_cast<int>(fi->fh));
  fuse_reply_err(req, 0);
}
void opFsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  int fd = static_cast<int>(fi->fh);
  fuse_reply_err(req, (datasync ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : errno);
}
void opOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&] { self(req)->opendir(req, ino, fi); });
}
void opReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&] { self(req)->readdir(req, ino, size, off, fi, false); });
}
void opReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   fuse_file_info* fi) {
  guarded(req, [&] { self(req)->readdir(req, ino, size, off, fi, true); });
}
void opReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  auto* d = reinterpret_cast<DirHandle*>(fi->fh);
  closedir(d->dir);
  delete d;
  fuse_reply_err(req, 0);
}
void opFsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  int fd = dirfd(reinterpret_cast<DirHandle*>(fi->fh)->dir);
  fuse_reply_err(req, (datasync ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : errno);
}
void opStatfs(fuse_req_t req, fuse_ino_t ino) { self(req)->statfs(req, ino); }
void opSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  guarded(req, [&] { self(req)->setxattr(req, ino, name, value, size, flags); });
}
void opGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guarded(req, [&] { self(req)->getxattr(req, ino, name, size); });
}
void opListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guarded(req, [&] { self(req)->listxattr(req, ino, size); });
}
void opRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  guarded(req, [&] { self(req)->removexattr(req, ino, name); });
}
void opFallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len,
                 fuse_file_info* fi) {
  int rc = ::fallocate(static_cast<int>(fi->fh), mode, off, len);
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}
void opLseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
  off_t r = ::lseek(static_cast<int>(fi->fh), off, whence);
  r < 0 ? fuse_reply_err(req, errno) : fuse_reply_lseek(req, r);
}

fuse_lowlevel_ops makeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = opInit;
  ops.lookup = opLookup;
  ops.forget = opForget;
  ops.forget_multi = opForgetMulti;
  ops.getattr = opGetattr;
  ops.setattr = opSetattr;
  ops.readlink = opReadlink;
  ops.mknod = opMknod;
  ops.mkdir = opMkdir;
  ops.symlink = opSymlink;
  ops.unlink = opUnlink;
  ops.rmdir = opRmdir;
  ops.rename = opRename;
  ops.link = opLink;
  ops.open = opOpen;
  ops.create = opCreate;
  ops.read = opRead;
  ops.write_buf = opWriteBuf;
  ops.flush = opFlush;
  ops.release = opRelease;
  ops.fsync = opFsync;
  ops.opendir = opOpendir;
  ops.readdir = opReaddir;
  ops.readdirplus = opReaddirplus;
  ops.releasedir = opReleasedir;
  ops.fsyncdir = opFsyncdir;
  ops.statfs = opStatfs;
  ops.setxattr = opSetxattr;
  ops.getxattr = opGetxattr;
  ops.listxattr = opListxattr;
  ops.removexattr = opRemovexattr;
  ops.fallocate = opFallocate;
  ops.lseek = opLseek;
  return ops;
}

}  // namespace

Error View::start() {
  // Directories hold a descriptor each while the kernel caches them.
  struct rlimit lim {};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  root_.fd = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_.fd < 0) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("cannot open /: ") + strerror(e), e);
  }
  struct stat st {};
  fstat(root_.fd, &st);
  root_.dev = st.st_dev;
  root_.ino = st.st_ino;
  root_.is_dir = true;
  root_.nlookup = 1;
  root_.write_verdict = policy_.file("/", FileOp::kWrite);
  root_.traverse_only =
      root_.write_verdict.access == Access::kHidden && policy_.revealsBelow("/");

  char tmpl[] = "/tmp/guard-empty-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("cannot create an empty directory: ") + strerror(e),
                 e);
  }
  empty_dir_ = tmpl;
  chmod(tmpl, 0555);
  empty_dir_fd_ = ::open(tmpl, O_PATH | O_DIRECTORY | O_CLOEXEC);

  for (const Overlay& o : opts_.overlays) {
    int mfd = fcntl(o.fd, F_DUPFD_CLOEXEC, 0);
    if (mfd < 0 || fcntl(mfd, F_GET_SEALS) != (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)) {
      int e = mfd < 0 ? errno : EINVAL;
      if (mfd >= 0) {
        close(mfd);
      }
      return Error(ErrorCode::kIo, "cannot serve " + o.path + ": not a sealed overlay", e);
    }
    overlay_fds_.emplace_back(o.path, mfd);
  }
  scanHidden();
  std::string home = policy_.context().home;
  for (Access want : {Access::kReadWrite, Access::kReadOnly}) {
    for (const auto& pp : policy_.pathPrefixes()) {
      bool in_home = !home.empty() && (pp.prefix == home || pp.prefix.starts_with(home + "/"));
      if (pp.access == want && !pp.glob && pp.prefix != "/" &&
          (want == Access::kReadWrite || in_home)) {
        scan_roots_.push_back(pp.prefix);
      }
    }
  }

  static const fuse_lowlevel_ops ops = makeOps();
  // default_permissions: the kernel checks mode bits against the caller,
  // so the view never grants more than the host would.
  const char* argv[] = {"guard", "-o", kMountOptions, nullptr};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  se_ = fuse_session_new(&args, &ops, sizeof(ops), this);
  fuse_opt_free_args(&args);
  if (se_ == nullptr) {
    return Error(ErrorCode::kIo, "cannot create the FUSE session");
  }
  std::string mount_target = opts_.mountpoint;
  if (geteuid() != 0 && access("/dev/fuse", R_OK | W_OK) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    struct stat dev {};
    std::string mode = stat("/dev/fuse", &dev) == 0 ? std::to_string(dev.st_mode & 0777) : "";
    char octal[8];
    snprintf(octal, sizeof(octal), "%o", dev.st_mode & 0777);
    return Error(ErrorCode::kIo,
                 mode.empty() ? std::string("guard needs FUSE and /dev/fuse does not exist "
                                            "(load the fuse module)")
                              : "guard needs FUSE and /dev/fuse (mode " + std::string(octal) +
                                    ") is not open to uid " + std::to_string(geteuid()) +
                                    "; Debian's fuse3 package makes it 0666");
  }
  if (geteuid() != 0) {
    // Unprivileged: fusermount3 (setuid) opens /dev/fuse, mounts, and hands
    // the descriptor back; libfuse then serves "/dev/fd/N" as given.
    auto fd = fusermountFd(opts_.mountpoint, kMountOptions);
    if (!fd.ok()) {
      fuse_session_destroy(se_);
      se_ = nullptr;
      return fd.error();
    }
    mount_target = "/dev/fd/" + std::to_string(fd.value());
  }
  if (fuse_session_mount(se_, mount_target.c_str()) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    return Error(ErrorCode::kIo,
                 "cannot mount the filesystem view on " + opts_.mountpoint +
                     " (needs /dev/fuse, and fusermount3 when not root)");
  }
  host_mounted_ = true;
  loop_ = std::thread([this] {
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, opts_.threads);
    // Keep the workers: creating a thread per burst of requests costs more
    // than the requests.
    fuse_loop_cfg_set_idle_threads(cfg, opts_.threads);
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    // 0 means the kernel ended the connection (every mount of the view is
    // gone, as when the session ends); anything else is a failure.
    int rc = fuse_session_loop_mt(se_, cfg);
    fuse_loop_cfg_destroy(cfg);
    loop_error_.store(rc != 0);
    if (rc != 0) {
      logger()->critical("the filesystem view stopped serving: {}", strerror(rc < 0 ? -rc : rc));
    }
  });
  return Error();
}

Error View::detachHostMount() {
  if (!host_mounted_) {
    return Error();
  }
  host_mounted_ = false;
  if (geteuid() == 0) {
    if (umount2(opts_.mountpoint.c_str(), MNT_DETACH) != 0) {
      int e = errno;
      return Error(ErrorCode::kIo, "cannot detach " + opts_.mountpoint + ": " + strerror(e), e);
    }
    return Error();
  }
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execlp("fusermount3", "fusermount3", "-u", "-z", "-q", opts_.mountpoint.c_str(),
           static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error(ErrorCode::kIo, "fusermount3 -u -z " + opts_.mountpoint + " failed");
  }
  return Error();
}

void View::stop() {
  if (se_ == nullptr) {
    return;
  }
  std::thread scan;
  {
    // Under the lock that starts the walk: none starts after this.
    std::lock_guard<std::mutex> lock(hidden_mu_);
    stopping_.store(true);
    scan = std::move(scan_thread_);
  }
  scan_cv_.notify_all();
  fuse_session_exit(se_);
  if (host_mounted_) {
    fuse_session_unmount(se_);
    host_mounted_ = false;
  }
  if (scan.joinable()) {
    scan.join();
  }
  // With the jail gone and the host mount detached, the kernel ends the
  // connection and the loop's blocking reads return ENODEV.
  if (loop_.joinable()) {
    loop_.join();
  }
  fuse_session_destroy(se_);
  se_ = nullptr;
  // Nodes the kernel still held at unmount: free them, children first.
  std::vector<Node*> stack;
  for (auto& [child_name, child] : root_.children) {
    stack.push_back(child);
  }
  root_.children.clear();
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (auto& [child_name, child] : n->children) {
      stack.push_back(child);
    }
    if (n->fd >= 0) {
      close(n->fd);
    }
    delete n;
  }
  for (auto& [path, fd] : overlay_fds_) {
    close(fd);
  }
  overlay_fds_.clear();
  if (empty_dir_fd_ >= 0) {
    close(empty_dir_fd_);
    empty_dir_fd_ = -1;
  }
  if (root_.fd >= 0) {
    close(root_.fd);
    root_.fd = -1;
  }
  if (!empty_dir_.empty()) {
    rmdir(empty_dir_.c_str());
  }
}

ViewHandle::ViewHandle(std::unique_ptr<View> view) : view_(std::move(view)) {}
ViewHandle::~ViewHandle() = default;
Error ViewHandle::detachHostMount() { return view_->detachHostMount(); }
bool ViewHandle::failed() const { return view_->failed(); }

Result<std::unique_ptr<ViewHandle>> mountView(const policy::Policy& policy,
                                              policy::AuditSink* sink,
                                              const ViewOptions& options) {
  auto view = std::make_unique<View>(policy, sink, options);
  if (Error e = view->start(); !e.ok()) {
    return e;
  }
  return std::make_unique<ViewHandle>(std::move(view));
}

Result<int> makeOverlay(const std::string& source, std::string_view tail, mode_t mode) {
  int mfd = memfd_create("guard-overlay", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mfd < 0) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("memfd_create: ") + strerror(e), e);
  }
  auto fail = [&](const std::string& what, int e) -> Result<int> {
    close(mfd);
    return Error(ErrorCode::kIo, what + ": " + strerror(e), e);
  };
  if (!source.empty()) {
    int src = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (src < 0 || fstat(src, &st) != 0 || !S_ISREG(st.st_mode)) {
      int e = src < 0 ? errno : EINVAL;
      if (src >= 0) {
        close(src);
      }
      return fail("cannot read " + source, e);
    }
    // sendfile copies in the kernel, page cache to shmem.
    off_t off = 0;
    while (off < st.st_size) {
      ssize_t n = sendfile(mfd, src, &off, static_cast<size_t>(st.st_size - off));
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        int e = n < 0 ? errno : EIO;
        close(src);
        return fail("cannot copy " + source, e);
      }
    }
    close(src);
  }
  for (size_t done = 0; done < tail.size();) {
    ssize_t n = write(mfd, tail.data() + done, tail.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return fail("cannot write an overlay", n < 0 ? errno : EIO);
    }
    done += static_cast<size_t>(n);
  }
  if (fchmod(mfd, mode) != 0 ||
      fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
    return fail("cannot seal an overlay", errno);
  }
  return mfd;
}

Result<ViewProcess> spawnView(const policy::Policy& policy, const std::string& audit_path,
                              const ViewOptions& options) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("socketpair: ") + strerror(e), e);
  }
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(sv[0]);
    close(sv[1]);
    return Error(ErrorCode::kIo, std::string("fork: ") + strerror(e), e);
  }
  if (pid == 0) {
    close(sv[0]);
    int ctl = sv[1];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    // The terminal's signals are for the agent; guard decides when to stop.
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGTSTP, SIG_IGN);
    auto reply = [&](const std::string& m) {
      ssize_t n = write(ctl, m.data(), m.size());
      (void)n;
    };
    auto sink = policy::FileAuditSink::open(audit_path);
    if (!sink.ok()) {
      reply("E" + sink.error().message());
      _exit(1);
    }
    auto handle = mountView(policy, sink.value().get(), options);
    if (!handle.ok()) {
      reply("E" + handle.error().message());
      _exit(1);
    }
    reply("R");
    char c;
    for (;;) {
      ssize_t n = read(ctl, &c, 1);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        break;  // guard closed the channel: the session is over
      }
      if (c == 'D') {
        Error e = handle.value()->detachHostMount();
        reply(e.ok() ? "d" : "E" + e.message());
      }
    }
    bool failed = handle.value()->failed();
    handle.value().reset();
    Error flushed = sink.value()->flush();
    _exit(failed || !flushed.ok() ? 1 : 0);
  }
  close(sv[1]);
  char buf[1024];
  ssize_t n;
  do {
    n = read(sv[0], buf, sizeof(buf));
  } while (n < 0 && errno == EINTR);
  if (n == 1 && buf[0] == 'R') {
    return ViewProcess{pid, sv[0]};
  }
  close(sv[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (n > 1 && buf[0] == 'E') {
    return Error(ErrorCode::kIo, std::string(buf + 1, static_cast<size_t>(n - 1)));
  }
  return Error(ErrorCode::kIo, "the filesystem view process failed to start");
}

Error detachView(const ViewProcess& view) {
  if (write(view.control_fd, "D", 1) != 1) {
    int e = errno;
    return Error(ErrorCode::kIo, std::string("the filesystem view is gone: ") + strerror(e), e);
  }
  char buf[512];
  ssize_t n;
  do {
    n = read(view.control_fd, buf, sizeof(buf));
  } while (n < 0 && errno == EINTR);
  if (n == 1 && buf[0] == 'd') {
    return Error();
  }
  return Error(ErrorCode::kIo, n > 1 ? std::string(buf + 1, static_cast<size_t>(n - 1))
                                     : "the filesystem view is gone");
}

Error stopView(ViewProcess* view) {
  if (view->pid < 0) {
    return Error();
  }
  close(view->control_fd);
  view->control_fd = -1;
  int status = 0;
  while (waitpid(view->pid, &status, 0) < 0 && errno == EINTR) {
  }
  view->pid = -1;
  if (WIFSIGNALED(status)) {
    return Error(ErrorCode::kInternal, std::string("the filesystem view died (") +
                                           strsignal(WTERMSIG(status)) + ")");
  }
  if (WEXITSTATUS(status) != 0) {
    return Error(ErrorCode::kInternal, "the filesystem view failed while serving");
  }
  return Error();
}

}  // namespace guard::fusefs
