// A guard session: policy, audit sink, filesystem view and jail wired together.
#pragma once

#include <string>
#include <vector>

namespace guard::cli {

struct SessionOptions {
  std::vector<std::string> policy_files;
  std::string audit_file;             // empty: the default under the user's state directory
  std::string allowed_audit = "writes";  // none | writes | first
  // serve_all: no bind mounts; the view serves every path (fusefs::planBinds).
  bool serve_all = false;
  // bind_writable: read-write trees are bound too (needs allowed_audit none).
  bool bind_writable = false;
  std::string dns_upstream;  // resolvers for the proxy ("host:port,..."); empty: the host's
  std::string upstream_ca;   // trust store for upstream TLS; empty: the host's bundle
  std::string record_file;   // --record: flow capture (docs/capture.md)
  // --vm: run the command in a QEMU microvm rooted in the view (vmhost/vm.h).
  bool vm = false;
  unsigned vm_memory_mib = 1024;
  unsigned vm_cpus = 1;
  std::vector<std::string> command;
};

// ProxyCommandOptions configures `guard proxy`: the proxy alone, serving
// explicit proxy requests (CONNECT, absolute-form HTTP) on a host address.
struct ProxyCommandOptions {
  std::vector<std::string> policy_files;
  std::string audit_file;
  std::string listen;       // ADDR:PORT
  std::string ca_out;       // where to write the session CA certificate (PEM)
  std::string dns_upstream;
  std::string upstream_ca;
  std::string record_file;
};

// runProxyCommand serves until SIGINT or SIGTERM; returns the exit status.
int runProxyCommand(const ProxyCommandOptions& options);

// McpWrapOptions configures `guard mcp-wrap`: one stdio MCP server run
// behind the policy's tool filter, outside a session.
struct McpWrapOptions {
  std::vector<std::string> policy_files;
  std::string audit_file;
  std::vector<std::string> command;  // the server
};

// runMcpWrap runs the server and filters its stdio until it exits; returns
// its exit status, or 126 when the policy denies it (after answering the
// client's requests with errors until it closes stdin).
int runMcpWrap(const McpWrapOptions& options);

// runSession runs OPTIONS.command under the policy and returns the exit
// status to leave with: the command's own (128+N for signal N), or 1 when
// guard refused or failed to set up (after printing why).
int runSession(const SessionOptions& options);

}  // namespace guard::cli
