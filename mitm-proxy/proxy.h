// The proxy: the agent's only way out. One epoll loop serves the DNS
// responder, transparent and explicit (CONNECT, absolute-form HTTP) TCP
// capture, TLS interception with the session CA, and the credential swap.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "mitm-proxy/secrets.h"
#include "mitm-proxy/tls.h"
#include "policy/audit.h"
#include "policy/error.h"
#include "policy/policy.h"

namespace guard::proxy {

// The port the proxy listens on inside the agent's network namespace (TCP,
// loopback). Every redirected connection and every explicit proxy request
// lands here; HTTP_PROXY points at it.
constexpr uint16_t kProxyPort = 15001;

struct ProxyOptions {
  // dns_upstream lists resolvers as "host:port,host:port"; empty: the host's
  // /etc/resolv.conf.
  std::string dns_upstream;
  // upstream_ca is the PEM bundle upstream servers must chain to.
  std::string upstream_ca = "/etc/ssl/certs/ca-certificates.crt";
  std::shared_ptr<SessionCa> ca;  // required
  std::vector<Secret> secrets;
  policy::AuditEvent audit_base;  // session, user, groups, host
  // record_path, when set, receives one JSON object per flow event (see
  // docs/capture.md).
  std::string record_path;
  // mode goes into every event's details ("host", "vm", "proxy").
  std::string mode = "host";
};

// Listeners are sockets the proxy serves, already bound and listening
// (TCP) or bound (UDP). The proxy takes ownership.
struct Listeners {
  std::vector<int> tcp;      // transparent capture and explicit proxy requests
  std::vector<int> dns_udp;  // DNS over UDP
  std::vector<int> dns_tcp;  // DNS over TCP (RFC 7766)
  std::vector<int> dropped;  // NFLOG netlink sockets reporting dropped packets
  std::vector<int> mcp;      // the MCP supervisor's sockets (policy/wire.h)
};

// serveProxy runs the proxy until STOP_FD reports EOF (or readable data);
// returns an error when it cannot start (trust store, resolver) or fails
// while serving. POLICY and SINK must outlive the call.
Error serveProxy(const policy::Policy& policy, policy::AuditSink* sink,
                 const ProxyOptions& options, Listeners listeners, int stop_fd);

// ProxyProcess is a proxy serving from a process of its own.
struct ProxyProcess {
  pid_t pid = -1;
  int control_fd = -1;  // closing it stops the proxy
  // jail_fd is the socket (SOCK_SEQPACKET) the jail sends its listeners on:
  // one message whose payload has one byte per descriptor passed with
  // SCM_RIGHTS: 'T' a TCP listener, 'U' a DNS UDP socket, 'D' a DNS TCP
  // listener, 'L' an NFLOG socket of dropped packets, 'M' the MCP
  // supervisor's socket. The caller passes it
  // to the jail and closes its copy.
  int jail_fd = -1;
};

// spawnProxy forks the proxy process. It writes its own audit events to
// AUDIT_PATH, waits for the jail's listeners on jail_fd and serves them.
// Returns once the process is forked; awaitProxy then waits until it is
// ready (its trust store loaded), so the caller can start other work, such
// as the view, meanwhile. Call it before the caller starts any thread.
Result<ProxyProcess> spawnProxy(const policy::Policy& policy, const std::string& audit_path,
                                const ProxyOptions& options);

// awaitProxy waits until the proxy is ready to receive the listeners.
// On error the process is reaped and its descriptors closed.
Error awaitProxy(ProxyProcess* proxy);

// stopProxy closes the control channel and waits for the process; returns
// an error when it died on its own or failed.
Error stopProxy(ProxyProcess* proxy);

}  // namespace guard::proxy
