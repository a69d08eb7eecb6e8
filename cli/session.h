// A guard session: policy, audit sink, filesystem view and jail wired together.
#pragma once

#include <string>
#include <vector>

namespace guard::cli {

struct SessionOptions {
  std::vector<std::string> policy_files;
  std::string audit_file;             // empty: the default under the user's state directory
  std::string allowed_audit = "writes";  // none | writes | first
  std::vector<std::string> command;
};

// runSession runs OPTIONS.command under the policy and returns the exit
// status to leave with: the command's own (128+N for signal N), or 1 when
// guard refused or failed to set up (after printing why).
int runSession(const SessionOptions& options);

}  // namespace guard::cli
