// Renders a merged policy for people: every rule with its layer and source.
#pragma once

#include <string>
#include <vector>

#include "policy/loader.h"
#include "policy/policy.h"

namespace guard::policy {

// renderPolicy returns the effective policy as commented YAML: the layers in
// merge order (FILES), then each surface's rules, lowest layer first, each
// with its id, layer, file:line:col and whether it is locked. Paths are
// shown expanded for the policy's context.
std::string renderPolicy(const Policy& policy, const std::vector<LayerFile>& files);

}  // namespace guard::policy
