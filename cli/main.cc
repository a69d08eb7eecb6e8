// guard's command line: `guard -- CMD`, and `guard policy check|show|default|explain`.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <charconv>
#include <climits>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "policy/loader.h"
#include "policy/policy.h"
#include "policy/show.h"
#include "policy/trust.h"
#include "cli/session.h"

namespace {

using guard::policy::Context;
using guard::policy::Decision;
using guard::policy::FileOp;
using guard::policy::LoadOptions;
using guard::policy::Policy;
using guard::policy::Verdict;

// Exit codes shared by every sub-command.
constexpr int kExitOk = 0;
constexpr int kExitPolicyError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitDenied = 3;

int fail(const std::string& message, int code) {
  std::fprintf(stderr, "guard: %s\n", message.c_str());
  return code;
}

guard::Result<Policy> loadFor(const std::vector<std::string>& files, Context* ctx,
                       guard::policy::Loaded* loaded) {
  auto c = guard::policy::contextFromEnvironment();
  if (!c.ok()) {
    return c.error();
  }
  *ctx = c.value();
  LoadOptions opts;
  opts.explicit_files = files;
  return guard::policy::loadPolicy(ctx, opts, loaded);
}

void printVerdict(const Verdict& v, const std::string& what) {
  std::printf("%s: %s\n", guard::policy::decisionName(v.decision), what.c_str());
  std::printf("  rule:   %.*s%s\n", static_cast<int>(v.rule.id.size()), v.rule.id.data(),
              v.locked ? " (locked)" : "");
  std::printf("  layer:  %.*s\n", static_cast<int>(v.rule.layer.size()), v.rule.layer.data());
  std::printf("  source: %s\n", v.rule.source().c_str());
  if (!v.reason.empty()) {
    std::printf("  reason: %.*s\n", static_cast<int>(v.reason.size()), v.reason.data());
  }
}

// splitHostPort parses HOST, HOST:PORT, [V6] and [V6]:PORT; bare IPv6 has no port.
bool splitHostPort(const std::string& in, std::string* host, uint16_t* port) {
  *port = 443;
  std::string p;
  if (!in.empty() && in[0] == '[') {
    size_t close = in.find(']');
    if (close == std::string::npos) {
      return false;
    }
    *host = in.substr(1, close - 1);
    if (close + 1 < in.size()) {
      if (in[close + 1] != ':') {
        return false;
      }
      p = in.substr(close + 2);
    }
  } else if (std::count(in.begin(), in.end(), ':') == 1) {
    size_t colon = in.find(':');
    *host = in.substr(0, colon);
    p = in.substr(colon + 1);
  } else {
    *host = in;
  }
  if (!p.empty()) {
    int v = 0;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (ec != std::errc() || end != p.data() + p.size() || v < 1 || v > 65535) {
      return false;
    }
    *port = static_cast<uint16_t>(v);
  }
  return !host->empty();
}

// replay decides every DNS query and connection of a capture (--record)
// again under the policy and prints each decision that changes. Exit 0 when
// none does, 3 when some does, 1 for an unreadable capture.
int replay(const std::vector<std::string>& files, const std::string& capture) {
  Context ctx;
  guard::policy::Loaded loaded;
  auto policy = loadFor(files, &ctx, &loaded);
  if (!policy.ok()) {
    std::fprintf(stderr, "%s\n", policy.error().message().c_str());
    return kExitPolicyError;
  }
  const Policy& p = policy.value();
  std::ifstream in(capture);
  if (!in) {
    return fail(capture + ": " + strerror(errno), kExitPolicyError);
  }
  std::string line;
  size_t lineno = 0;
  size_t flows = 0;
  size_t changed = 0;
  while (std::getline(in, line)) {
    ++lineno;
    auto e = nlohmann::json::parse(line, nullptr, false);
    if (e.is_discarded() || !e.is_object()) {
      return fail(capture + ":" + std::to_string(lineno) + ": not a capture line (JSON object)",
                  kExitPolicyError);
    }
    std::string event = e.value("event", "");
    std::string before = e.value("decision", "");
    Verdict v;
    std::string what;
    if (event == "dns") {
      what = "resolve " + e.value("name", "");
      v = p.dns(e.value("name", ""));
    } else if (event == "connect") {
      std::string host;
      uint16_t port = 0;
      what = "connect " + e.value("target", "");
      if (!splitHostPort(e.value("target", ""), &host, &port)) {
        continue;
      }
      v = p.host(host, port);
    } else {
      continue;
    }
    ++flows;
    std::string after = guard::policy::decisionName(v.decision);
    if (after != before) {
      ++changed;
      std::printf("%s: %s -> %s (rule %s, %s)\n", what.c_str(), before.c_str(), after.c_str(),
                  std::string(v.rule.id).c_str(), v.rule.source().c_str());
    }
  }
  std::printf("%zu flows replayed, %zu decided differently\n", flows, changed);
  return changed == 0 ? kExitOk : kExitDenied;
}

int explain(const std::vector<std::string>& files, const std::vector<std::string>& args) {
  const char* usage =
      "usage: guard policy explain net HOST[:PORT] | dns NAME | file read|write PATH | "
      "mcp SERVER TOOL | cred NAME HOST | env NAME";
  if (args.empty()) {
    return fail(usage, kExitUsage);
  }
  Context ctx;
  guard::policy::Loaded loaded;
  auto policy = loadFor(files, &ctx, &loaded);
  if (!policy.ok()) {
    std::fprintf(stderr, "%s\n", policy.error().message().c_str());
    return kExitPolicyError;
  }
  const Policy& p = policy.value();
  const std::string& kind = args[0];
  Verdict v;
  std::string what;
  if (kind == "net" && args.size() == 2) {
    std::string host;
    uint16_t port = 0;
    if (!splitHostPort(args[1], &host, &port)) {
      return fail("bad HOST[:PORT] '" + args[1] + "'", kExitUsage);
    }
    v = p.host(host, port);
    what = "connect " + host + ":" + std::to_string(port);
  } else if (kind == "dns" && args.size() == 2) {
    v = p.dns(args[1]);
    what = "resolve " + args[1];
  } else if (kind == "file" && args.size() == 3 && (args[1] == "read" || args[1] == "write")) {
    std::string path = args[2];
    if (path.empty() || path[0] != '/') {
      path = ctx.project + "/" + path;
    }
    v = p.file(path, args[1] == "read" ? FileOp::kRead : FileOp::kWrite);
    what = args[1] + " " + path + " (" + guard::policy::accessName(v.access) + ")";
  } else if (kind == "mcp" && args.size() == 3) {
    v = p.mcpTool(args[1], args[2]);
    what = "MCP server " + args[1] + " tool " + args[2];
  } else if (kind == "cred" && args.size() == 3) {
    v = p.credential(args[1], args[2]);
    what = "credential " + args[1] + " to " + args[2];
  } else if (kind == "env" && args.size() == 2) {
    v = p.env(args[1]);
    what = "variable " + args[1];
  } else {
    return fail(usage, kExitUsage);
  }
  printVerdict(v, what);
  return v.decision == Decision::kDeny ? kExitDenied : kExitOk;
}

int check(const std::vector<std::string>& files) {
  if (files.empty()) {
    return fail("usage: guard policy check FILE...", kExitUsage);
  }
  int rc = kExitOk;
  for (const std::string& f : files) {
    auto layer = guard::policy::loadLayerFile(f, "");
    if (layer.ok()) {
      auto ctx = guard::policy::contextFromEnvironment();
      if (!ctx.ok()) {
        return fail(ctx.error().message(), kExitPolicyError);
      }
      auto compiled = guard::policy::compile({layer.value()}, ctx.value());
      if (!compiled.ok()) {
        std::fprintf(stderr, "%s\n", compiled.error().message().c_str());
        rc = kExitPolicyError;
        continue;
      }
      std::printf("%s: ok\n", f.c_str());
    } else {
      std::fprintf(stderr, "%s\n", layer.error().message().c_str());
      rc = kExitPolicyError;
    }
  }
  return rc;
}

int show(const std::vector<std::string>& files) {
  Context ctx;
  guard::policy::Loaded loaded;
  auto policy = loadFor(files, &ctx, &loaded);
  if (!policy.ok()) {
    std::fprintf(stderr, "%s\n", policy.error().message().c_str());
    return kExitPolicyError;
  }
  std::fputs(guard::policy::renderPolicy(policy.value(), loaded.files).c_str(), stdout);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  auto log = spdlog::stderr_color_mt("cli");
  spdlog::set_default_logger(log);
  spdlog::set_level(spdlog::level::warn);

  CLI::App app{
      "guard runs an AI agent (or any command) under one policy the runtime enforces:\n"
      "files it may see or change, hosts it may reach, secrets it may use, MCP tools it\n"
      "may call. Every decision is written as a JSON audit event.\n\n"
      "  guard -- claude                      run an agent under the policy\n"
      "  guard policy show                    the effective policy and where each rule is from\n"
      "  guard policy explain net github.com  which rule decides, and why\n",
      "guard"};
  app.set_version_flag("--version", "guard 0.1.0");
  app.footer(
      "\nExit status: the command's own (128+N when killed by signal N); 1 when guard\n"
      "refuses (a policy error, an untrusted project policy) or cannot set the session\n"
      "up; 2 for usage errors. guard never runs a command unconfined.\n\n"
      "Policy layers: /etc/guard/org.yaml, /etc/guard/groups/<group>.yaml,\n"
      "~/.config/guard/policy.yaml, ./.guard.yaml (after `guard policy trust`);\n"
      "the embedded default (`guard policy default`) when there is no org layer.\n"
      "Language and merge rules: docs/policy.md. Security model: docs/security.md.");
  std::vector<std::string> policy_files;
  std::string audit_file;
  int verbosity = 0;
  std::vector<std::string> cmd;
  app.add_option("--policy", policy_files,
                 "policy file; repeat to layer (replaces user and project layers; org and group "
                 "layers from /etc/guard still apply)")
      ->check(CLI::ExistingFile)
      ->allow_extra_args(false);
  app.add_option("--audit", audit_file,
                 "audit log (JSON Lines); default $XDG_STATE_HOME/guard/audit.jsonl");
  std::string allowed_audit = "writes";
  app.add_option("--audit-allowed", allowed_audit,
                 "which allowed file operations are audited: none, writes (first change per "
                 "path, default) or first (first access of any kind per path); denials always "
                 "are")
      ->check(CLI::IsMember({"none", "writes", "first"}));
  bool serve_all = false;
  app.add_flag("--serve-all", serve_all,
               "serve every path through the filesystem view. By default, trees that one "
               "read-only rule decides alike (/usr) are bind-mounted read-only instead: a "
               "refused write there fails with EROFS and no audit event (docs/security.md)");
  bool bind_writable = false;
  app.add_flag("--bind-writable", bind_writable,
               "also bind-mount read-write trees that one rule decides alike (the project): "
               "native speed, but allowed writes there go unaudited and a Unix socket there is "
               "the host's. Needs --audit-allowed none");
  std::string dns_upstream;
  std::string upstream_ca;
  std::string record_file;
  app.add_option("--dns-upstream", dns_upstream,
                 "resolvers the proxy asks for allowed names, HOST:PORT[,HOST:PORT] "
                 "(default: the host's /etc/resolv.conf)");
  app.add_option("--upstream-ca", upstream_ca,
                 "PEM bundle that servers must chain to (default: the host's "
                 "/etc/ssl/certs/ca-certificates.crt)")
      ->check(CLI::ExistingFile);
  app.add_option("--record", record_file,
                 "append every network flow (DNS, connections, HTTP requests; secrets never "
                 "included) to FILE as JSON Lines, for replay against another policy "
                 "(docs/capture.md)");
  bool vm = false;
  unsigned vm_memory = 1024;
  unsigned vm_cpus = 1;
  app.add_flag("--vm", vm,
               "run the command inside a QEMU microvm whose root is the same policy view "
               "(needs scripts/vm-prepare.sh once); its only network is the same proxy, and "
               "MCP stdio servers in it are filtered on the host");
  app.add_option("--vm-memory", vm_memory, "the VM's memory in MiB (default 1024)")
      ->check(CLI::Range(64u, 1u << 20));
  app.add_option("--vm-cpus", vm_cpus, "the VM's virtual CPUs (default 1)")
      ->check(CLI::Range(1u, 64u));
  app.add_flag("-v,--verbose", verbosity, "more diagnostics on stderr (-vv for debug)");
  app.add_option("cmd", cmd, "command to run after --")->take_all();
  app.positionals_at_end();

  auto* pol = app.add_subcommand("policy", "check, show and explain policies");
  pol->require_subcommand(1);
  std::vector<std::string> check_files;
  auto* chk = pol->add_subcommand(
      "check", "validate policy files; exit 0 when valid, 1 with file:line:col errors");
  chk->add_option("FILE", check_files, "policy files")->required();
  auto* shw = pol->add_subcommand(
      "show", "print the effective merged policy, each rule with its layer and source");
  shw->add_option("--policy", policy_files, "policy file; repeat to layer")
      ->check(CLI::ExistingFile)
      ->allow_extra_args(false);
  auto* dfl = pol->add_subcommand("default", "print the embedded default policy");
  std::string trust_file;
  auto* tru = pol->add_subcommand(
      "trust",
      "approve this project's .guard.yaml (after reviewing it); guard applies a project\n"
      "policy only in a form you approved, and asks again whenever it changes");
  tru->add_option("FILE", trust_file, "the project policy (default ./.guard.yaml)");
  std::vector<std::string> explain_args;
  auto* exp = pol->add_subcommand(
      "explain",
      "decide one request and print the rule (exit 0 allow, 3 deny):\n"
      "  net HOST[:PORT]   dns NAME   file read|write PATH\n"
      "  mcp SERVER TOOL   cred NAME HOST   env NAME");
  exp->add_option("--policy", policy_files, "policy file; repeat to layer")
      ->check(CLI::ExistingFile)
      ->allow_extra_args(false);
  exp->add_option("request", explain_args, "the request to decide")->required();
  std::string capture_file;
  auto* rep = pol->add_subcommand(
      "replay",
      "decide every DNS query and connection of a capture (guard --record FILE) again\n"
      "under a policy; print each decision that changes (exit 0 none, 3 some)");
  rep->add_option("--policy", policy_files, "policy file; repeat to layer")
      ->check(CLI::ExistingFile)
      ->allow_extra_args(false);
  rep->add_option("CAPTURE", capture_file, "the capture (JSON Lines)")->required()->check(CLI::ExistingFile);

  guard::cli::ProxyCommandOptions px;
  auto* prx = app.add_subcommand(
      "proxy",
      "run guard's proxy alone on a host address: HTTP CONNECT and absolute-form HTTP\n"
      "requests are decided by the policy, TLS to `inspect` destinations is intercepted\n"
      "with a fresh session CA. Stops on Ctrl-C or SIGTERM.\n"
      "  guard proxy --listen 127.0.0.1:3128 --ca-out ca.pem\n"
      "  curl --proxy http://127.0.0.1:3128 --cacert ca.pem https://api.github.com/");
  prx->add_option("--listen", px.listen, "ADDR:PORT to listen on")->required();
  prx->add_option("--policy", px.policy_files, "policy file; repeat to layer")
      ->check(CLI::ExistingFile)
      ->allow_extra_args(false);
  prx->add_option("--audit", px.audit_file, "audit log (JSON Lines)");
  prx->add_option("--ca-out", px.ca_out, "write the session CA certificate (PEM) here");
  prx->add_option("--dns-upstream", px.dns_upstream, "resolvers, HOST:PORT[,HOST:PORT]");
  prx->add_option("--upstream-ca", px.upstream_ca, "PEM bundle servers must chain to")
      ->check(CLI::ExistingFile);
  prx->add_option("--record", px.record_file, "flow capture file (JSON Lines)");

  guard::cli::McpWrapOptions mw;
  auto* mcw = app.add_subcommand(
      "mcp-wrap",
      "run one stdio MCP server behind the policy's tool filter: tools/list loses the\n"
      "denied tools, tools/call of a denied tool gets a JSON-RPC error and never reaches\n"
      "the server, every call is an audit event. Inside `guard --` sessions this\n"
      "happens on its own; use mcp-wrap to govern a server an MCP client starts outside\n"
      "one, e.g. as the command of a client's server configuration:\n"
      "  guard mcp-wrap -- npx -y @modelcontextprotocol/server-filesystem ~/notes");
  mcw->add_option("--policy", mw.policy_files, "policy file; repeat to layer")
      ->check(CLI::ExistingFile)
      ->allow_extra_args(false);
  mcw->add_option("--audit", mw.audit_file, "audit log (JSON Lines)");
  mcw->add_option("command", mw.command, "the server's command line (after --)");

  // Everything after the first "--" is the command, verbatim: CLI11 would
  // read an argument such as '[1,2]' as a list and change it.
  int own = argc;
  std::vector<std::string> tail;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      own = i;
      tail.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  try {
    app.parse(own, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (verbosity > 0) {
    spdlog::set_level(verbosity > 1 ? spdlog::level::debug : spdlog::level::info);
  }
  if (*chk) {
    return check(check_files);
  }
  if (*prx) {
    return guard::cli::runProxyCommand(px);
  }
  if (*mcw) {
    mw.command.insert(mw.command.end(), tail.begin(), tail.end());
    if (mw.command.empty()) {
      return fail("mcp-wrap: nothing to run\n  usage: guard mcp-wrap [--policy FILE]... -- CMD [ARGS...]",
                  kExitUsage);
    }
    return guard::cli::runMcpWrap(mw);
  }
  if (*tru) {
    std::string file = trust_file.empty() ? ".guard.yaml" : trust_file;
    char real[PATH_MAX];
    if (realpath(file.c_str(), real) == nullptr) {
      return fail(file + ": " + strerror(errno), kExitPolicyError);
    }
    if (int rc = check({real}); rc != kExitOk) {
      return rc;
    }
    auto hash = guard::policy::trustFile(real);
    if (!hash.ok()) {
      return fail(hash.error().message(), kExitPolicyError);
    }
    std::printf("trusted %s (sha256 %s)\n", real, hash.value().c_str());
    return kExitOk;
  }
  if (*shw) {
    return show(policy_files);
  }
  if (*dfl) {
    std::fwrite(guard::policy::defaultPolicyText().data(), 1,
                guard::policy::defaultPolicyText().size(), stdout);
    return kExitOk;
  }
  if (*exp) {
    return explain(policy_files, explain_args);
  }
  if (*rep) {
    return replay(policy_files, capture_file);
  }
  cmd.insert(cmd.end(), tail.begin(), tail.end());
  if (cmd.empty()) {
    std::fputs(app.help().c_str(), stderr);
    return kExitUsage;
  }
  guard::cli::SessionOptions session;
  session.policy_files = policy_files;
  session.audit_file = audit_file;
  session.allowed_audit = allowed_audit;
  session.serve_all = serve_all;
  session.bind_writable = bind_writable;
  session.dns_upstream = dns_upstream;
  session.upstream_ca = upstream_ca;
  session.record_file = record_file;
  session.command = cmd;
  if (!vm && (app.count("--vm-memory") > 0 || app.count("--vm-cpus") > 0)) {
    return fail("--vm-memory and --vm-cpus go with --vm", kExitUsage);
  }
  session.vm = vm;
  session.vm_memory_mib = vm_memory;
  session.vm_cpus = vm_cpus;
  return guard::cli::runSession(session);
}
