// TLS for interception: the per-session CA that mints leaf certificates, and
// the client context that verifies upstream servers (BoringSSL).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "policy/error.h"

namespace guard::proxy {

// SessionCa is a certificate authority made for one session. Its private key
// exists only in this process's memory; the certificate (PEM) is what the
// agent's trust store gets.
class SessionCa {
 public:
  // create makes a fresh EC P-256 CA valid from an hour ago for 7 days.
  static Result<std::shared_ptr<SessionCa>> create();

  const std::string& certPem() const { return cert_pem_; }

  // newServer returns an SSL in server mode presenting a leaf certificate for
  // NAME (a domain or an IP literal), minted on first use and cached; ALPN
  // offers only http/1.1. Null on failure (out of memory).
  SSL* newServer(const std::string& name);

 private:
  bssl::UniquePtr<X509> leafFor(const std::string& name);

  bssl::UniquePtr<EVP_PKEY> ca_key_;
  bssl::UniquePtr<X509> ca_cert_;
  bssl::UniquePtr<EVP_PKEY> leaf_key_;  // one key for every leaf: minting only signs
  bssl::UniquePtr<SSL_CTX> server_ctx_;
  std::string cert_pem_;
  std::unordered_map<std::string, bssl::UniquePtr<X509>> leaves_;
  uint64_t serial_ = 1;
};

// UpstreamTls verifies the servers guard connects to on the agent's behalf.
class UpstreamTls {
 public:
  // create trusts the PEM bundle CA_FILE (the host's trust store by default).
  // It only checks that the file can be read: the bundle (some 140
  // certificates, ~5 ms of CPU) is parsed by the first newClient, so a
  // session that never connects upstream through TLS never pays for it.
  static Result<std::unique_ptr<UpstreamTls>> create(const std::string& ca_file);

  // newClient returns an SSL in client mode that sends SNI NAME (unless it is
  // an IP literal), requires a certificate chain to a trusted root and NAME
  // in the certificate, and offers only http/1.1 by ALPN; nullptr, with
  // error() saying why when the trust store did not load.
  // Sessions are resumed per name (TLS 1.3 tickets, 1.2 session ids): a
  // new connection to a server verified before skips the certificate chain.
  SSL* newClient(const std::string& name);

  // error is why the trust store could not be loaded ("" while it could).
  const std::string& error() const { return error_; }

 private:
  static int onNewSession(SSL* ssl, SSL_SESSION* session);

  bssl::UniquePtr<SSL_CTX> ctx_;
  std::string ca_file_;
  bool loaded_ = false;
  std::string error_;  // a failed load is not retried: every connection is refused
  std::unordered_map<std::string, bssl::UniquePtr<SSL_SESSION>> sessions_;
};

// tlsErrorText describes the last BoringSSL error of this thread (and clears it).
std::string tlsErrorText();

}  // namespace guard::proxy
