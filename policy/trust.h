// Project-layer trust: a .guard.yaml comes with the repository the agent
// works on (and the agent may edit it), so guard applies it only after the
// user has approved that exact content.
#pragma once

#include <string>

#include "policy/error.h"

namespace guard::policy {

// sha256Hex returns the SHA-256 of DATA as 64 lowercase hex digits
// (BoringSSL).
std::string sha256Hex(std::string_view data);

// trustStorePath is $XDG_STATE_HOME/guard/trusted-projects (or the
// ~/.local/state equivalent).
std::string trustStorePath();

// isTrusted reports whether the file at absolute PATH with content hash
// SHA256 was approved with trustFile.
bool isTrusted(const std::string& path, const std::string& sha256);

// trustFile records PATH's current content as approved; returns its hash.
Result<std::string> trustFile(const std::string& path);

}  // namespace guard::policy
