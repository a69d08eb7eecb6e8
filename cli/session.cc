// A guard session: policy, audit sink, filesystem view and jail wired together.
#include "cli/session.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fusefs/view.h"
#include "policy/audit.h"
#include "policy/loader.h"
#include "policy/policy.h"
#include "vmhost/jail.h"

extern char** environ;

namespace guard::cli {
namespace {

using policy::AuditEvent;
using policy::Decision;

constexpr int kSetupFailed = 1;

int refuse(const std::string& why) {
  std::fprintf(stderr, "guard: %s\n", why.c_str());
  return kSetupFailed;
}

AuditEvent event(const AuditEvent& base, const char* surface, const char* action,
                 const std::string& target, const std::string& decision) {
  AuditEvent e = base;
  e.ts = std::chrono::system_clock::now();
  e.mono_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();
  e.component = "cli";
  e.surface = surface;
  e.action = action;
  e.target = target;
  e.decision = decision;
  e.pid = static_cast<int>(getpid());
  return e;
}

void withRule(AuditEvent* e, const policy::Verdict& v) {
  e->rule = {std::string(v.rule.id), std::string(v.rule.layer), v.rule.source()};
  e->reason = std::string(v.reason);
}

// agentEnvironment keeps the host variables the policy lets through, then
// sets the policy's `env.set` values (overriding host ones). Every decision
// is audited.
std::vector<std::string> agentEnvironment(const policy::Policy& p, policy::AuditSink* sink,
                                          const AuditEvent& base) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      continue;
    }
    std::string name = kv.substr(0, eq);
    policy::Verdict v = p.env(name);
    AuditEvent ev = event(base, "env", "pass", name, policy::decisionName(v.decision));
    withRule(&ev, v);
    sink->emit(std::move(ev));
    if (v.allowed()) {
      env.push_back(kv);
    }
  }
  for (const auto& set : p.envSet()) {
    std::string prefix = set.first + "=";
    std::erase_if(env, [&](const std::string& kv) { return kv.rfind(prefix, 0) == 0; });
    env.push_back(prefix + set.second);
    AuditEvent ev = event(base, "env", "set", set.first, "allow");
    sink->emit(std::move(ev));
  }
  return env;
}

std::string runtimeDir() {
  const char* x = getenv("XDG_RUNTIME_DIR");
  if (x != nullptr && x[0] == '/' && access(x, W_OK) == 0) {
    return x;
  }
  return "/tmp";
}

}  // namespace

int runSession(const SessionOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  auto phase = [&](const char* what) {
    spdlog::debug("{:.1f} ms: {}",
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                      .count(),
                  what);
  };
  if (options.command.empty()) {
    return refuse("nothing to run\n  usage: guard [--policy FILE]... [--audit FILE] -- CMD [ARGS...]");
  }
  auto ctx_or = policy::contextFromEnvironment();
  if (!ctx_or.ok()) {
    return refuse(ctx_or.error().message());
  }
  policy::Context ctx = ctx_or.value();
  policy::LoadOptions load;
  load.explicit_files = options.policy_files;
  policy::Loaded loaded;
  auto pol = policy::loadPolicy(&ctx, load, &loaded);
  if (!pol.ok()) {
    std::fprintf(stderr, "%s\n", pol.error().message().c_str());
    return refuse("refusing to run: the policy has errors");
  }
  const policy::Policy& p = pol.value();

  phase("policy loaded");

  fusefs::AllowedAudit allowed;
  if (options.allowed_audit == "none") {
    allowed = fusefs::AllowedAudit::kNone;
  } else if (options.allowed_audit == "writes") {
    allowed = fusefs::AllowedAudit::kWrites;
  } else if (options.allowed_audit == "first") {
    allowed = fusefs::AllowedAudit::kFirst;
  } else {
    return refuse("--audit-allowed must be none, writes or first");
  }

  policy::Verdict cwd = p.file(ctx.project, policy::FileOp::kRead);
  if (!cwd.allowed() && !p.revealsBelow(ctx.project)) {
    return refuse("the working directory " + ctx.project + " is hidden by rule " +
                  std::string(cwd.rule.id) + " (" + cwd.rule.source() + ")");
  }

  AuditEvent base;
  base.session = policy::newSessionId();
  base.user = ctx.user;
  base.groups = ctx.groups;
  base.host = ctx.host;

  std::string audit_path = options.audit_file.empty() ? policy::defaultAuditPath()
                                                      : options.audit_file;
  // The view is served by a process of its own: guard outlives it to report
  // its death and end the session, and the jail is forked from a process
  // that holds no serving threads.
  std::string mnt = runtimeDir() + "/guard-" + base.session;
  if (mkdir(mnt.c_str(), 0700) != 0) {
    return refuse("cannot create " + mnt + ": " + strerror(errno));
  }
  fusefs::ViewOptions vopts;
  vopts.mountpoint = mnt;
  vopts.allowed_audit = allowed;
  vopts.audit_base = base;
  auto view_or = fusefs::spawnView(p, audit_path, vopts);
  if (!view_or.ok()) {
    rmdir(mnt.c_str());
    return refuse(view_or.error().message());
  }
  fusefs::ViewProcess view = view_or.value();
  phase("view mounted");

  auto sink_or = policy::FileAuditSink::open(audit_path);
  if (!sink_or.ok()) {
    fusefs::stopView(&view);
    rmdir(mnt.c_str());
    return refuse("cannot open the audit log: " + sink_or.error().message());
  }
  std::unique_ptr<policy::FileAuditSink> sink = std::move(sink_or.value());

  std::string cmdline;
  for (const std::string& a : options.command) {
    cmdline += (cmdline.empty() ? "" : " ") + a;
  }
  AuditEvent start = event(base, "session", "start", cmdline, "ok");
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : loaded.files) {
    files.push_back({{"layer", f.layer}, {"file", f.file}});
  }
  start.details = {{"mode", "host"}, {"cwd", ctx.project}, {"policy", files}};
  sink->emit(std::move(start));

  std::vector<std::string> env = agentEnvironment(p, sink.get(), base);

  phase("environment decided");
  vmhost::JailSpec spec;
  spec.argv = options.command;
  spec.env = env;
  spec.cwd = ctx.project;
  spec.root = mnt;
  spec.writable = {"/dev", "/tmp"};
  bool everything_writable = false;
  for (const auto& vp : p.pathPrefixes()) {
    if (vp.access == policy::Access::kReadWrite) {
      if (vp.prefix == "/") {
        everything_writable = true;
      }
      spec.writable.push_back(vp.prefix);
    }
  }
  if (everything_writable) {
    spec.writable = {"/"};
  }

  // The terminal's signals go to the agent (same process group); guard
  // itself waits for the agent to decide.
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  signal(SIGTSTP, SIG_IGN);

  Error detach_error;
  bool view_died = false;
  auto rc = vmhost::runJail(
      spec,
      [&] {
        phase("jail rooted in the view");
        detach_error = fusefs::detachView(view);
      },
      view.pid, &view_died);
  phase("agent exited");
  Error view_error = fusefs::stopView(&view);
  rmdir(mnt.c_str());
  phase("view stopped");

  int code = 0;
  AuditEvent done = event(base, "session", "exit", cmdline, "ok");
  if (!rc.ok()) {
    done.decision = "setup_error";
    done.reason = rc.error().message();
    code = kSetupFailed;
    std::fprintf(stderr, "guard: %s\n", rc.error().message().c_str());
  } else {
    code = rc.value();
    done.details = {{"exit_code", code}};
    if (code > 128 && code < 128 + 65) {
      done.decision = "signaled";
    }
  }
  if (view_died || !view_error.ok()) {
    done.decision = "internal_error";
    done.reason = view_error.ok() ? "the filesystem view died" : view_error.message();
    std::fprintf(stderr, "guard: %s; the session was ended (the agent never sees the host)\n",
                 done.reason.c_str());
    code = kSetupFailed;
  }
  if (!detach_error.ok()) {
    std::fprintf(stderr, "guard: warning: %s\n", detach_error.message().c_str());
  }
  sink->emit(std::move(done));
  if (Error e = sink->flush(); !e.ok()) {
    std::fprintf(stderr, "guard: the audit log failed: %s\n", e.message().c_str());
    return code == 0 ? kSetupFailed : code;
  }
  return code;
}

}  // namespace guard::cli
