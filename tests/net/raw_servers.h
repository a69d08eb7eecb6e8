// SshServer and BannerServer: server-first TCP origins on a TestNet site's
// loopback addresses, for tests of the proxy's raw TCP path (no TLS, no HTTP).
#pragma once

#include <string>
#include <vector>

#include "tests/net/net_fixture.h"

namespace guard::testing {

// SshServer runs OpenSSH's sshd (/usr/sbin/sshd -D -e -f CONFIG -E LOG) on
// every address of one TestNet site, on one free high port, serving a bare git
// repository with one commit to the ordinary git-upload-pack. Everything it
// needs lives in DIR = net.dir()/sshd-NAME: its own host key, sshd_config
// (UsePAM no, StrictModes no, public keys only, LogLevel VERBOSE),
// authorized_keys holding the client key's public half, the pid file, the log
// and repo.git. The login user is the one running the test (sshd can only
// switch to another user as root); as root, sshd's privilege-separation
// directory /run/sshd is created when missing, as the distribution's service
// would.
// The constructor waits until sshd logs "Server listening" for every address;
// it throws std::runtime_error naming the step (with sshd's log) on failure.
// The destructor stops sshd; the files go with the TestNet's temp dir.
// Readiness is read from the log, never probed with a connection, so a test
// may claim that the log holds no "Connection from" line at all.
class SshServer {
 public:
  // missingTool returns the first OpenSSH tool that is not installed
  // (/usr/sbin/sshd, ssh, ssh-keygen), or "" when all are there.
  static std::string missingTool();

  SshServer(const TestNet& net, const std::string& name);
  ~SshServer();
  SshServer(const SshServer&) = delete;
  SshServer& operator=(const SshServer&) = delete;

  int port() const { return port_; }
  // user is the login name; clientKey the private key (0600) it logs in with.
  const std::string& user() const { return user_; }
  std::string clientKey() const;
  // repoPath is the bare repository's absolute path; repoHead its commit on
  // branch main.
  std::string repoPath() const;
  const std::string& repoHead() const { return head_; }
  // log is sshd's log so far (-E); waitLog polls until it contains NEEDLE and
  // returns whether that happened within TIMEOUT_MS.
  std::string log() const;
  bool waitLog(const std::string& needle, int timeout_ms = 5000) const;
  const std::string& dir() const { return dir_; }

 private:
  void start(const TestNet& net, const std::string& name);
  void stop();

  std::string dir_;
  std::string user_;
  std::string head_;
  int port_ = 0;
  int pid_ = -1;
};

// BannerServer runs tests/net/banner_server.py on every address of one
// TestNet site, on one free port: per accepted connection it appends
// "accept PEER" to its log, sends BANNER and CRLF first, then logs what the
// client sent ("recv N BYTES") and closes. Files live in
// net.dir()/banner-NAME. The constructor throws std::runtime_error when the
// server does not come up; the destructor stops it.
class BannerServer {
 public:
  BannerServer(const TestNet& net, const std::string& name, const std::string& banner);
  ~BannerServer();
  BannerServer(const BannerServer&) = delete;
  BannerServer& operator=(const BannerServer&) = delete;

  int port() const { return port_; }
  // log is the server's log so far ("" before any connection); waitLog polls
  // until it contains NEEDLE within TIMEOUT_MS.
  std::string log() const;
  bool waitLog(const std::string& needle, int timeout_ms = 5000) const;

 private:
  std::string dir_;
  int port_ = 0;
  int pid_ = -1;
};

}  // namespace guard::testing
