// Reads the policy's credentials on the host, before anything of the agent's
// runs, and turns each into a placeholder for the agent and a real value for
// the proxy.
#pragma once

#include <string>
#include <vector>

#include "mitm-proxy/secrets.h"
#include "policy/error.h"
#include "policy/policy.h"

namespace guard::cli {

// Credentials pairs the proxy's secrets with the variables the agent sees.
struct Credentials {
  std::vector<proxy::Secret> secrets;
  std::vector<std::pair<std::string, std::string>> variables;  // NAME -> placeholder
  std::vector<std::string> missing;  // credentials whose source gave nothing
};

// readCredentials reads every credential source (an environment variable,
// a file, or a command's standard output; one trailing newline removed).
// A missing source is an error (kNotFound) only for a `required` credential;
// otherwise its variable still holds a placeholder and nothing is injected.
Result<Credentials> readCredentials(const policy::Policy& policy);

}  // namespace guard::cli
