// Parses one YAML policy document into a Layer, with file:line:col errors.
//
// yaml-cpp builds the tree; this file walks it, checks every key, type and
// value, and normalises patterns. Exceptions from yaml-cpp stay inside this
// file (STYLE.md: exceptions only while loading configuration).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <functional>
#include <set>

#include "policy/document.h"
#include "policy/names.h"

namespace guard::policy {
namespace {

constexpr size_t kMaxErrors = 20;

Loc locOf(const YAML::Node& n) {
  YAML::Mark m = n.Mark();
  if (m.is_null()) {
    return {};
  }
  return {static_cast<uint32_t>(m.line + 1), static_cast<uint32_t>(m.column + 1)};
}

const char* typeName(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "nothing";
  }
  return "nothing";
}

// checkShape rejects nesting deeper than kMaxNesting before yaml-cpp sees the
// text: its parser recurses once per level and would overflow the stack.
// Flow collections ("[[[[") and one-line block sequences ("- - - -") are the
// two ways to nest deeply without a long indentation.
bool checkShape(std::string_view text, Loc* where) {
  int flow = 0;
  uint32_t line = 1;
  uint32_t col = 0;
  bool in_comment = false;
  char quote = 0;
  int block = 0;
  bool line_start = true;
  char last = '\n';
  for (char c : text) {
    char prev = last;
    last = c;
    ++col;
    if (c == '\n') {
      ++line;
      col = 0;
      in_comment = false;
      block = 0;
      line_start = true;
      if (quote == '\'') {
        continue;
      }
      continue;
    }
    if (in_comment) {
      continue;
    }
    if (quote != 0) {
      if (c == quote) {
        quote = 0;
      }
      continue;
    }
    if (line_start) {
      if (c == ' ' || c == '\t') {
        continue;
      }
      if (c == '-' || c == '?') {
        if (++block > kMaxNesting || col > 4 * kMaxNesting) {
          *where = {line, col};
          return false;
        }
        continue;
      }
      if (col > 4 * kMaxNesting) {
        *where = {line, col};
        return false;
      }
      line_start = false;
    }
    bool token_start = prev == ' ' || prev == '\t' || prev == '[' || prev == '{' ||
                       prev == ',' || prev == ':' || prev == '-' || prev == '\n';
    switch (c) {
      case '#':
        in_comment = prev == ' ' || prev == '\t' || prev == '\n';
        break;
      case '"':
      case '\'':
        if (token_start) {
          quote = c;
        }
        break;
      case '[':
      case '{':
        if (++flow > kMaxNesting) {
          *where = {line, col};
          return false;
        }
        break;
      case ']':
      case '}':
        if (flow > 0) {
          --flow;
        }
        break;
      default:
        break;
    }
  }
  return true;
}

// tooDeep walks ROOT without recursion; true when it nests deeper than
// kMaxNesting or has more than kMaxNodes values (aliases count every time).
bool tooDeep(const YAML::Node& root, Loc* where, bool* too_many) {
  std::vector<std::pair<YAML::Node, int>> stack;
  stack.emplace_back(root, 0);
  size_t seen = 0;
  while (!stack.empty()) {
    auto [n, depth] = stack.back();
    stack.pop_back();
    bool collection = n.IsSequence() || n.IsMap();
    if ((collection && depth > kMaxNesting) || ++seen > kMaxNodes) {
      *where = locOf(n);
      *too_many = seen > kMaxNodes;
      return true;
    }
    if (n.IsSequence()) {
      for (const YAML::Node& c : n) {
        stack.emplace_back(c, depth + 1);
      }
    } else if (n.IsMap()) {
      for (const auto& kv : n) {
        stack.emplace_back(kv.first, depth + 1);
        stack.emplace_back(kv.second, depth + 1);
      }
    }
  }
  return false;
}

class Parser {
 public:
  Parser(std::string_view file, std::string_view layer) : file_(file), layer_(layer) {}

  Result<std::shared_ptr<const Layer>> run(std::string_view text) {
    if (text.size() > kMaxDocumentBytes) {
      return Error(ErrorCode::kPolicyLimit,
                   file_ + ":1:1: error: policy file is larger than 1 MiB\n  hint: split it into "
                           "layers or use wildcards");
    }
    Loc deep;
    if (!checkShape(text, &deep)) {
      return Error(ErrorCode::kPolicyLimit,
                   at(deep) + "error: nesting deeper than " + std::to_string(kMaxNesting) +
                       " levels\n  hint: a policy never needs this; is the file generated wrongly?");
    }
    YAML::Node root;
    try {
      root = YAML::Load(std::string(text));
    } catch (const YAML::DeepRecursion& e) {
      Loc l{static_cast<uint32_t>(e.mark.line + 1), static_cast<uint32_t>(e.mark.column + 1)};
      return Error(ErrorCode::kPolicyLimit, at(l) + "error: nesting deeper than " +
                                                std::to_string(kMaxNesting) + " levels");
    } catch (const YAML::Exception& e) {
      Loc l{static_cast<uint32_t>(e.mark.line + 1), static_cast<uint32_t>(e.mark.column + 1)};
      std::string hint;
      if (e.msg.find("anchor") != std::string::npos || e.msg.find("alias") != std::string::npos) {
        hint = "\n  hint: quote patterns that start with '*', e.g. \"*.example.com\" (YAML reads "
               "*name as an alias)";
      }
      return Error(ErrorCode::kPolicySyntax, at(l) + "error: " + e.msg + hint);
    }
    // The text check above is a fast pre-filter; this walk of the loaded
    // tree (iterative, bounded by kMaxNodes) is the exact limit.
    Loc l;
    bool too_many = false;
    if (tooDeep(root, &l, &too_many)) {
      if (too_many) {
        return Error(ErrorCode::kPolicyLimit,
                     at(l) + "error: policy has more than " + std::to_string(kMaxNodes) +
                         " values\n  hint: aliases that repeat large lists multiply; write the "
                         "list once");
      }
      return Error(ErrorCode::kPolicyLimit,
                   at(l) + "error: nesting deeper than " + std::to_string(kMaxNesting) + " levels");
    }
    auto layer = std::make_shared<Layer>();
    layer->name = layer_;
    layer->file = file_;
    try {
      document(root, layer.get());
    } catch (const YAML::Exception& e) {
      // Conversions are checked before they run, so this means a yaml-cpp
      // surprise; still report it against the file rather than crash.
      fail(Loc{static_cast<uint32_t>(e.mark.line + 1), static_cast<uint32_t>(e.mark.column + 1)},
           e.msg, "");
    }
    if (!errors_.empty()) {
      std::string all;
      for (const std::string& e : errors_) {
        all += e;
        all += '\n';
      }
      all.pop_back();
      return Error(limit_hit_ ? ErrorCode::kPolicyLimit : ErrorCode::kPolicyInvalid, all);
    }
    return std::shared_ptr<const Layer>(std::move(layer));
  }

 private:
  std::string at(Loc l) const {
    return file_ + ":" + std::to_string(l.line) + ":" + std::to_string(l.col) + ": ";
  }

  void fail(Loc l, const std::string& msg, const std::string& hint) {
    if (errors_.size() >= kMaxErrors) {
      return;
    }
    std::string e = at(l) + "error: " + msg;
    if (!hint.empty()) {
      e += "\n  hint: " + hint;
    }
    errors_.push_back(std::move(e));
  }

  void fail(const YAML::Node& n, const std::string& msg, const std::string& hint = "") {
    fail(locOf(n), msg, hint);
  }

  bool count(const YAML::Node& n) {
    if (++nodes_ > kMaxNodes) {
      if (!limit_hit_) {
        limit_hit_ = true;
        fail(n, "policy has more than " + std::to_string(kMaxNodes) + " values",
             "aliases that repeat large lists multiply; write the list once");
      }
      return false;
    }
    return true;
  }

  // forEachKey calls FN for each key of map N in order; reports unknown or
  // duplicate keys. ALLOWED lists the keys this mapping accepts.
  void forEachKey(const YAML::Node& n, const std::string& what,
                  std::initializer_list<const char*> allowed,
                  const std::function<void(const std::string&, const YAML::Node&,
                                           const YAML::Node&)>& fn) {
    if (!n.IsMap()) {
      fail(n, what + " must be a mapping, found " + typeName(n));
      return;
    }
    std::set<std::string> seen;
    for (const auto& kv : n) {
      const auto* it = &kv;
      if (!count(it->second)) {
        return;
      }
      const YAML::Node& key = it->first;
      if (!key.IsScalar()) {
        fail(key, what + " keys must be plain words");
        continue;
      }
      const std::string& k = key.Scalar();
      if (!seen.insert(k).second) {
        fail(key, "duplicate key '" + k + "' in " + what, "each key may appear once");
        continue;
      }
      bool known = false;
      for (const char* a : allowed) {
        known = known || k == a;
      }
      if (!known) {
        std::string list;
        for (const char* a : allowed) {
          list += list.empty() ? "" : ", ";
          list += a;
        }
        fail(key, "unknown key '" + k + "' in " + what, "expected one of: " + list);
        continue;
      }
      fn(k, key, it->second);
    }
  }

  bool scalar(const YAML::Node& n, const std::string& what, std::string* out) {
    if (!n.IsScalar()) {
      fail(n, what + " must be a single value, found " + typeName(n));
      return false;
    }
    *out = n.Scalar();
    return true;
  }

  // twoWay reads a scalar that must be YES (true) or NO (false); QUOTE
  // quotes them in the error, where they are words rather than booleans.
  bool twoWay(const YAML::Node& n, const std::string& what, const std::string& yes,
              const std::string& no, bool quote, bool* out) {
    std::string s;
    if (!scalar(n, what, &s)) {
      return false;
    }
    if (s != yes && s != no) {
      std::string q = quote ? "'" : "";
      fail(n, what + " must be " + q + yes + q + " or " + q + no + q + ", found '" + s + "'");
      return false;
    }
    *out = s == yes;
    return true;
  }
  bool boolean(const YAML::Node& n, const std::string& what, bool* out) {
    return twoWay(n, what, "true", "false", false, out);
  }
  bool allowDeny(const YAML::Node& n, const std::string& what, bool* out) {
    return twoWay(n, what, "allow", "deny", true, out);
  }

  // strings accepts one scalar or a list of scalars.
  bool strings(const YAML::Node& n, const std::string& what, std::vector<std::string>* out,
               std::vector<Loc>* locs = nullptr) {
    auto one = [&](const YAML::Node& s) {
      std::string v;
      if (!scalar(s, what, &v)) {
        return false;
      }
      if (v.empty()) {
        fail(s, what + " must not be empty");
        return false;
      }
      out->push_back(v);
      if (locs != nullptr) {
        locs->push_back(locOf(s));
      }
      return true;
    };
    if (n.IsSequence()) {
      if (n.size() == 0) {
        fail(n, what + " is an empty list", "remove the rule or name at least one value");
        return false;
      }
      bool ok = true;
      for (const YAML::Node& s : n) {
        if (!count(s)) {
          return false;
        }
        ok = one(s) && ok;
      }
      return ok;
    }
    return one(n);
  }

  void mode(const YAML::Node& n, std::optional<Mode>* out) {
    std::string s;
    if (!scalar(n, "mode", &s)) {
      return;
    }
    if (s == "enforce") {
      *out = Mode::kEnforce;
    } else if (s == "audit") {
      *out = Mode::kAudit;
    } else {
      fail(n, "mode must be 'enforce' or 'audit', found '" + s + "'");
    }
  }

  // meta handles the keys every rule shares; returns true if KEY was one.
  bool meta(const std::string& key, const YAML::Node& v, RuleMeta* m) {
    if (key == "id") {
      if (scalar(v, "id", &m->id)) {
        if (m->id.empty() || m->id.find_first_of(" \t\n\"") != std::string::npos) {
          fail(v, "id must be a non-empty word without spaces or quotes");
        } else if (!ids_.insert(m->id).second) {
          fail(v, "duplicate rule id '" + m->id + "'", "ids must be unique within a file");
        }
      }
      return true;
    }
    if (key == "locked") {
      boolean(v, "locked", &m->locked);
      return true;
    }
    if (key == "mode") {
      mode(v, &m->mode);
      return true;
    }
    if (key == "reason") {
      scalar(v, "reason", &m->reason);
      return true;
    }
    return false;
  }

  void defaultId(RuleMeta* m, const char* surface, size_t index) {
    if (m->id.empty()) {
      m->id = layer_ + "." + surface + "." + std::to_string(index + 1);
      if (!ids_.insert(m->id).second) {
        fail(m->loc, "duplicate rule id '" + m->id + "'",
             "an explicit id elsewhere repeats this rule's generated id; choose another");
      }
    }
  }

  bool access(const YAML::Node& n, const std::string& s, Access* out) {
    if (s == "hidden") {
      *out = Access::kHidden;
    } else if (s == "read-only") {
      *out = Access::kReadOnly;
    } else if (s == "read-write") {
      *out = Access::kReadWrite;
    } else {
      fail(n, "filesystem mode must be hidden, read-only or read-write, found '" + s + "'");
      return false;
    }
    return true;
  }

  // ---- network ----------------------------------------------------------

  bool netTarget(const YAML::Node& n, const std::string& raw, NetTarget* t) {
    t->loc = locOf(n);
    if (raw == "*") {
      t->kind = NetTargetKind::kAny;
      t->text = "*";
      return true;
    }
    size_t slash = raw.find('/');
    std::string addr_text = raw.substr(0, slash);
    IpAddr addr;
    bool colon = addr_text.find(':') != std::string::npos;
    bool is_ip = colon ? IpAddr::parse(addr_text, &addr) : parseDottedQuad(addr_text, &addr);
    if (!is_ip && !colon && lastLabelNumeric(addr_text)) {
      fail(n, "'" + raw + "' is not a valid IPv4 address or domain name",
           "write IPv4 addresses as four decimal numbers, e.g. 10.0.0.0/8");
      return false;
    }
    if (is_ip) {
      int max = colon ? 128 : 32;
      int prefix = max;
      if (slash != std::string::npos) {
        std::string p = raw.substr(slash + 1);
        auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
        if (ec != std::errc() || end != p.data() + p.size() || p.empty() || prefix < 0 ||
            prefix > max) {
          fail(n, "bad CIDR prefix in '" + raw + "'",
               "the prefix length is 0-" + std::to_string(max) + " for this address family");
          return false;
        }
      }
      // An IPv4-mapped IPv6 address or CIDR (::ffff:10.0.0.0/104) is IPv4.
      if (addr.v4 && colon) {
        if (prefix < 96) {
          fail(n, "IPv4-mapped CIDR '" + raw + "' is wider than the mapped range",
               "write the IPv4 network instead");
          return false;
        }
        prefix -= 96;
      }
      IpAddr masked = addr;
      int bytes = addr.v4 ? 4 : 16;
      for (int i = 0; i < bytes; ++i) {
        int keep = prefix - i * 8;
        uint8_t mask = keep >= 8 ? 0xff : keep <= 0 ? 0 : static_cast<uint8_t>(0xff << (8 - keep));
        masked.bytes[i] &= mask;
      }
      if (memcmp(masked.bytes, addr.bytes, 16) != 0) {
        fail(n, "'" + raw + "' has host bits set",
             "did you mean " + masked.toString() + "/" + std::to_string(prefix) + "?");
        return false;
      }
      t->kind = NetTargetKind::kAddress;
      t->addr = masked;
      t->prefix = static_cast<uint8_t>(prefix);
      t->text = masked.toString() + "/" + std::to_string(prefix);
      return true;
    }
    if (slash != std::string::npos) {
      fail(n, "'" + raw + "' is neither a domain nor a CIDR",
           "write a network as ADDRESS/PREFIX, e.g. 10.0.0.0/8");
      return false;
    }
    std::string name = raw;
    if (name.rfind("*.", 0) == 0) {
      t->kind = NetTargetKind::kWildcard;
      name = name.substr(2);
    } else {
      t->kind = NetTargetKind::kDomain;
    }
    if (name.find(':') != std::string::npos) {
      fail(n, "'" + raw + "' is not a domain", "give ports in a separate 'ports:' list");
      return false;
    }
    if (name.find('*') != std::string::npos) {
      fail(n, "bad wildcard in '" + raw + "'",
           "a wildcard is allowed only as a whole first label: \"*.example.com\"");
      return false;
    }
    t->text = normaliseDomain(name);
    if (t->text.empty()) {
      fail(n, "'" + raw + "' is not a valid domain name",
           "labels are 1-63 letters, digits, '-' or '_', 253 bytes in all");
      return false;
    }
    return true;
  }

  // parseDottedQuad accepts only the four-decimal-numbers form (inet_pton):
  // in a policy "010.0.0.0" is an error, not octal for 8.0.0.0.
  static bool parseDottedQuad(const std::string& s, IpAddr* out) {
    struct in_addr in {};
    if (inet_pton(AF_INET, s.c_str(), &in) != 1) {
      return false;
    }
    *out = IpAddr{};
    memcpy(out->bytes, &in.s_addr, 4);
    out->v4 = true;
    return true;
  }

  // lastLabelNumeric: a name whose last label is all digits ("10", "1.2",
  // "256.1.1.1") is a mistyped address; no top-level domain is numeric.
  static bool lastLabelNumeric(const std::string& s) {
    std::string_view v = s;
    if (!v.empty() && v.back() == '.') {
      v.remove_suffix(1);
    }
    size_t dot = v.rfind('.');
    std::string_view last = dot == std::string_view::npos ? v : v.substr(dot + 1);
    if (last.empty()) {
      return false;
    }
    for (char c : last) {
      if (c < '0' || c > '9') {
        return false;
      }
    }
    return true;
  }

  void ports(const YAML::Node& n, std::vector<PortRange>* out) {
    std::vector<std::string> items;
    std::vector<Loc> locs;
    if (!strings(n, "ports", &items, &locs)) {
      return;
    }
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string& s = items[i];
      size_t dash = s.find('-');
      auto num = [&](std::string_view v, uint16_t* p) {
        int x = 0;
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
        if (ec != std::errc() || end != v.data() + v.size() || v.empty() || x < 1 || x > 65535) {
          return false;
        }
        *p = static_cast<uint16_t>(x);
        return true;
      };
      PortRange r;
      bool ok = dash == std::string::npos
                    ? num(s, &r.lo) && num(s, &r.hi)
                    : num(std::string_view(s).substr(0, dash), &r.lo) &&
                          num(std::string_view(s).substr(dash + 1), &r.hi) && r.lo <= r.hi;
      if (!ok) {
        fail(locs[i], "bad port '" + s + "'", "ports are 1-65535, or a range \"8000-8100\"");
        continue;
      }
      out->push_back(r);
    }
  }

  void network(const YAML::Node& n, Layer* layer) {
    YAML::Node locked_key;
    forEachKey(n, "network", {"default", "default_locked", "inspect", "rules"},
               [&](const std::string& k, const YAML::Node& key, const YAML::Node& v) {
                 if (k == "default") {
                   bool allow = false;
                   if (allowDeny(v, "network.default", &allow)) {
                     layer->network.default_value = allow;
                     layer->network.default_loc = locOf(v);
                   }
                 } else if (k == "default_locked") {
                   boolean(v, k, &layer->network.default_locked);
                   locked_key = key;
                 } else if (k == "inspect") {
                   bool b = false;
                   if (boolean(v, "network.inspect", &b)) {
                     layer->network_inspect = b;
                   }
                 } else if (k == "rules") {
                   list(v, "network.rules", [&](const YAML::Node& r) { netRule(r, layer); });
                 }
               });
    checkLockedDefault(locked_key, layer->network.default_locked &&
                                       layer->network.default_value.value_or(false));
  }

  void checkLockedDefault(const YAML::Node& key, bool loosest) {
    if (loosest && key.IsDefined()) {
      fail(key, "default_locked on the loosest default has no effect",
           "later layers may always narrow; lock a deny default instead");
    }
  }

  void list(const YAML::Node& n, const std::string& what,
            const std::function<void(const YAML::Node&)>& fn) {
    if (!n.IsSequence()) {
      fail(n, what + " must be a list, found " + typeName(n));
      return;
    }
    for (const YAML::Node& item : n) {
      if (!count(item)) {
        return;
      }
      fn(item);
    }
  }

  void netRule(const YAML::Node& n, Layer* layer) {
    NetRule r;
    r.meta.loc = locOf(n);
    int actions = 0;
    forEachKey(n, "network rule",
               {"allow", "deny", "ports", "inspect", "id", "locked", "mode", "reason"},
               [&](const std::string& k, const YAML::Node&, const YAML::Node& v) {
                 if (meta(k, v, &r.meta)) {
                   return;
                 }
                 if (k == "allow" || k == "deny") {
                   ++actions;
                   r.allow = k == "allow";
                   std::vector<std::string> raw;
                   std::vector<Loc> locs;
                   if (!strings(v, k, &raw, &locs)) {
                     return;
                   }
                   std::set<std::string> seen;
                   for (size_t i = 0; i < raw.size(); ++i) {
                     NetTarget t;
                     YAML::Node item = v.IsSequence() ? v[i] : v;
                     if (netTarget(item, raw[i], &t)) {
                       if (!seen.insert((t.kind == NetTargetKind::kWildcard ? "*." : "") + t.text).second) {
                         fail(item, "'" + raw[i] + "' is listed twice in this rule");
                         continue;
                       }
                       r.targets.push_back(std::move(t));
                     }
                   }
                 } else if (k == "ports") {
                   ports(v, &r.ports);
                 } else if (k == "inspect") {
                   bool b = false;
                   if (boolean(v, "inspect", &b)) {
                     r.inspect = b;
                   }
                 }
               });
    if (!n.IsMap()) {
      return;
    }
    if (actions != 1) {
      fail(n, actions == 0 ? "network rule has neither 'allow' nor 'deny'"
                           : "network rule has both 'allow' and 'deny'",
           "write one action per rule, e.g. - allow: example.com");
      return;
    }
    if (r.inspect.has_value() && !r.allow) {
      fail(n, "'inspect' applies to allow rules only");
    }
    if (r.meta.locked && r.allow) {
      fail(n, "locked: true on an allow rule has no effect",
           "later layers may always narrow; lock the deny rules instead");
    }
    defaultId(&r.meta, "network", layer->net_rules.size());
    layer->net_rules.push_back(std::move(r));
  }

  // ---- filesystem -------------------------------------------------------

  bool pathPattern(const YAML::Node& n, const std::string& p) {
    std::string_view v = p;
    if (v.rfind("{project}", 0) == 0) {
      v.remove_prefix(9);
      if (!v.empty() && v[0] != '/') {
        fail(n, "'{project}' must be followed by '/' or nothing in '" + p + "'");
        return false;
      }
    } else if (v.rfind("~", 0) == 0) {
      v.remove_prefix(1);
      if (!v.empty() && v[0] != '/') {
        fail(n, "'" + p + "': only '~' (the user's home) is supported, not '~user'");
        return false;
      }
    } else if (v[0] != '/' && v.find('/') != std::string_view::npos && v.rfind("**/", 0) != 0) {
      fail(n, "relative path '" + p + "'",
           "start with '/', '~', '{project}' or '**/'; a bare name like \"*.pem\" matches at "
           "any depth");
      return false;
    }
    if (v.find('{') != std::string_view::npos || v.find('}') != std::string_view::npos) {
      fail(n, "unknown placeholder in '" + p + "'", "the only placeholder is {project}");
      return false;
    }
    if (v.find('\0') != std::string_view::npos) {
      fail(n, "path contains a NUL byte");
      return false;
    }
    size_t i = 0;
    while (i <= v.size()) {
      size_t j = v.find('/', i);
      if (j == std::string_view::npos) {
        j = v.size();
      }
      std::string_view seg = v.substr(i, j - i);
      if (seg.find("**") != std::string_view::npos && seg != "**") {
        fail(n, "bad glob '" + p + "'", "'**' must be a whole path segment, as in \"a/**/b\"");
        return false;
      }
      if (seg == "..") {
        fail(n, "'..' in path pattern '" + p + "'", "write the path without '..'");
        return false;
      }
      i = j + 1;
    }
    return true;
  }

  void filesystem(const YAML::Node& n, Layer* layer) {
    YAML::Node locked_key;
    forEachKey(n, "filesystem", {"default", "default_locked", "rules"},
               [&](const std::string& k, const YAML::Node& key, const YAML::Node& v) {
                 if (k == "default") {
                   std::string s;
                   Access a;
                   if (scalar(v, "filesystem.default", &s) && access(v, s, &a)) {
                     layer->filesystem.default_value = a;
                     layer->filesystem.default_loc = locOf(v);
                   }
                 } else if (k == "default_locked") {
                   boolean(v, k, &layer->filesystem.default_locked);
                   locked_key = key;
                 } else if (k == "rules") {
                   list(v, "filesystem.rules", [&](const YAML::Node& r) { fsRule(r, layer); });
                 }
               });
    checkLockedDefault(locked_key, layer->filesystem.default_locked &&
                                       layer->filesystem.default_value == Access::kReadWrite);
  }

  void fsRule(const YAML::Node& n, Layer* layer) {
    FsRule r;
    r.meta.loc = locOf(n);
    int actions = 0;
    forEachKey(n, "filesystem rule",
               {"hidden", "read-only", "read-write", "id", "locked", "mode", "reason"},
               [&](const std::string& k, const YAML::Node& key, const YAML::Node& v) {
                 if (meta(k, v, &r.meta)) {
                   return;
                 }
                 ++actions;
                 access(key, k, &r.access);
                 if (!strings(v, k, &r.paths, &r.path_locs)) {
                   return;
                 }
                 for (size_t i = 0; i < r.paths.size(); ++i) {
                   pathPattern(v.IsSequence() ? v[i] : v, r.paths[i]);
                 }
               });
    if (!n.IsMap()) {
      return;
    }
    if (actions != 1) {
      fail(n, "filesystem rule needs exactly one of hidden, read-only, read-write",
           "e.g. - read-only: /usr");
      return;
    }
    if (r.meta.locked && r.access == Access::kReadWrite) {
      fail(n, "locked: true on a read-write rule has no effect",
           "later layers may always narrow; lock hidden or read-only rules instead");
    }
    defaultId(&r.meta, "filesystem", layer->fs_rules.size());
    layer->fs_rules.push_back(std::move(r));
  }

  // ---- env --------------------------------------------------------------

  static bool envName(std::string_view s) {
    for (char c : s) {
      bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '*' || c == '?';
      if (!ok) {
        return false;
      }
    }
    return !s.empty();
  }

  void env(const YAML::Node& n, Layer* layer) {
    YAML::Node locked_key;
    forEachKey(
        n, "env", {"default", "default_locked", "set", "rules"},
        [&](const std::string& k, const YAML::Node& key, const YAML::Node& v) {
          if (k == "default") {
            bool allow = false;
            if (allowDeny(v, "env.default", &allow)) {
              layer->env.default_value = allow;
              layer->env.default_loc = locOf(v);
            }
          } else if (k == "default_locked") {
            boolean(v, k, &layer->env.default_locked);
            locked_key = key;
          } else if (k == "set") {
            forEachKeyAny(v, "env.set", [&](const std::string& name, const YAML::Node& kn,
                                            const YAML::Node& val) {
              std::string s;
              if (!envName(name) || hasGlob(name)) {
                fail(kn, "'" + name + "' is not a variable name");
              } else if (scalar(val, "env.set." + name, &s)) {
                layer->env_set.emplace_back(name, s);
              }
            });
          } else if (k == "rules") {
            list(v, "env.rules", [&](const YAML::Node& r) {
              NameRule rule;
              rule.meta.loc = locOf(r);
              int actions = 0;
              forEachKey(r, "env rule", {"allow", "deny", "id", "locked", "mode", "reason"},
                         [&](const std::string& rk, const YAML::Node&, const YAML::Node& rv) {
                           if (meta(rk, rv, &rule.meta)) {
                             return;
                           }
                           ++actions;
                           rule.allow = rk == "allow";
                           std::vector<Loc> locs;
                           if (strings(rv, rk, &rule.names, &locs)) {
                             for (size_t i = 0; i < rule.names.size(); ++i) {
                               if (!envName(rule.names[i])) {
                                 fail(locs[i], "'" + rule.names[i] + "' is not a variable name",
                                      "letters, digits and '_', with '*' or '?' as globs");
                               }
                             }
                           }
                         });
              if (!r.IsMap()) {
                return;
              }
              if (actions != 1) {
                fail(r, "env rule needs exactly one of allow, deny", "e.g. - allow: [PATH, \"LC_*\"]");
                return;
              }
              if (rule.meta.locked && rule.allow) {
                fail(r, "locked: true on an allow rule has no effect",
                     "later layers may always narrow; lock the deny rules instead");
              }
              defaultId(&rule.meta, "env", layer->env_rules.size());
              layer->env_rules.push_back(std::move(rule));
            });
          }
        });
    checkLockedDefault(locked_key,
                       layer->env.default_locked && layer->env.default_value.value_or(false));
  }

  // forEachKeyAny walks a mapping whose keys are free-form names.
  void forEachKeyAny(const YAML::Node& n, const std::string& what,
                     const std::function<void(const std::string&, const YAML::Node&,
                                              const YAML::Node&)>& fn) {
    if (!n.IsMap()) {
      fail(n, what + " must be a mapping, found " + typeName(n));
      return;
    }
    std::set<std::string> seen;
    for (const auto& kv : n) {
      const auto* it = &kv;
      if (!count(it->second)) {
        return;
      }
      if (!it->first.IsScalar()) {
        fail(it->first, what + " keys must be plain words");
        continue;
      }
      if (!seen.insert(it->first.Scalar()).second) {
        fail(it->first, "duplicate key '" + it->first.Scalar() + "' in " + what);
        continue;
      }
      fn(it->first.Scalar(), it->first, it->second);
    }
  }

  // ---- credentials ------------------------------------------------------

  void credentials(const YAML::Node& n, Layer* layer) {
    std::set<std::string> names;
    list(n, "credentials", [&](const YAML::Node& item) {
      Credential c;
      c.meta.loc = locOf(item);
      bool has_source = false;
      bool has_dest = false;
      forEachKey(
          item, "credential",
          {"name", "source", "variable", "destinations", "inject", "required", "id", "locked",
           "mode", "reason"},
          [&](const std::string& k, const YAML::Node& key, const YAML::Node& v) {
            if (meta(k, v, &c.meta)) {
              return;
            }
            if (k == "name") {
              if (scalar(v, "name", &c.name) && !names.insert(c.name).second) {
                fail(v, "duplicate credential name '" + c.name + "'",
                     "each credential is defined once per file");
              }
            } else if (k == "variable") {
              if (scalar(v, "variable", &c.variable) && (!envName(c.variable) || hasGlob(c.variable))) {
                fail(v, "'" + c.variable + "' is not a variable name");
              }
            } else if (k == "required") {
              boolean(v, "required", &c.required);
            } else if (k == "destinations") {
              has_dest = true;
              std::vector<std::string> raw;
              if (strings(v, "destinations", &raw)) {
                for (size_t i = 0; i < raw.size(); ++i) {
                  NetTarget t;
                  if (netTarget(v.IsSequence() ? v[i] : v, raw[i], &t)) {
                    c.destinations.push_back(std::move(t));
                  }
                }
              }
            } else if (k == "source") {
              has_source = true;
              int kinds = 0;
              forEachKey(v, "credential source", {"env", "file", "command"},
                         [&](const std::string& sk, const YAML::Node&, const YAML::Node& sv) {
                           ++kinds;
                           if (sk == "env") {
                             c.source.kind = CredentialSource::Kind::kEnv;
                             if (scalar(sv, "source.env", &c.source.value) &&
                                 (!envName(c.source.value) || hasGlob(c.source.value))) {
                               fail(sv, "'" + c.source.value + "' is not a variable name");
                             }
                           } else if (sk == "file") {
                             c.source.kind = CredentialSource::Kind::kFile;
                             if (scalar(sv, "source.file", &c.source.value) &&
                                 c.source.value[0] != '/' && c.source.value.rfind("~/", 0) != 0) {
                               fail(sv, "credential file must be an absolute path or start with ~/");
                             }
                           } else {
                             c.source.kind = CredentialSource::Kind::kCommand;
                             strings(sv, "source.command", &c.source.argv);
                           }
                         });
              if (v.IsMap() && kinds != 1) {
                fail(key, "credential source needs exactly one of env, file, command");
              }
            } else if (k == "inject") {
              forEachKey(v, "inject", {"header", "template"},
                         [&](const std::string& ik, const YAML::Node&, const YAML::Node& iv) {
                           if (ik == "header") {
                             scalar(iv, "inject.header", &c.header);
                           } else if (scalar(iv, "inject.template", &c.header_template) &&
                                      c.header_template.find("{value}") == std::string::npos) {
                             fail(iv, "inject.template must contain {value}",
                                  "e.g. \"Bearer {value}\"");
                           }
                         });
            }
          });
      if (!item.IsMap()) {
        return;
      }
      if (c.name.empty()) {
        fail(item, "credential has no name");
        return;
      }
      if (!has_source) {
        fail(item, "credential '" + c.name + "' has no source",
             "e.g. source: {env: GITHUB_TOKEN}");
      }
      if (!has_dest) {
        fail(item, "credential '" + c.name + "' has no destinations",
             "name the hosts it may be sent to");
      }
      if (c.variable.empty()) {
        c.variable = c.source.kind == CredentialSource::Kind::kEnv ? c.source.value : "";
      }
      if (c.meta.id.empty()) {
        c.meta.id = layer_ + ".credentials." + c.name;
      }
      layer->credentials.push_back(std::move(c));
    });
  }

  // ---- mcp --------------------------------------------------------------

  void mcp(const YAML::Node& n, Layer* layer) {
    YAML::Node locked_key;
    forEachKey(
        n, "mcp", {"default", "default_locked", "servers"},
        [&](const std::string& k, const YAML::Node& key, const YAML::Node& v) {
          if (k == "default") {
            bool allow = false;
            if (allowDeny(v, "mcp.default", &allow)) {
              layer->mcp.default_value = allow;
              layer->mcp.default_loc = locOf(v);
            }
          } else if (k == "default_locked") {
            boolean(v, k, &layer->mcp.default_locked);
            locked_key = key;
          } else if (k == "servers") {
            std::set<std::string> names;
            list(v, "mcp.servers", [&](const YAML::Node& item) { mcpServer(item, layer, &names); });
          }
        });
    checkLockedDefault(locked_key,
                       layer->mcp.default_locked && layer->mcp.default_value.value_or(false));
  }

  void mcpServer(const YAML::Node& item, Layer* layer, std::set<std::string>* names) {
    McpServer s;
    s.meta.loc = locOf(item);
    forEachKey(item, "mcp server",
               {"name", "command", "url", "allow", "tools", "arguments", "id", "locked", "mode",
                "reason"},
               [&](const std::string& k, const YAML::Node&, const YAML::Node& v) {
                 if (meta(k, v, &s.meta)) {
                   return;
                 }
                 if (k == "name") {
                   if (scalar(v, "name", &s.name) && !names->insert(s.name).second) {
                     fail(v, "duplicate MCP server name '" + s.name + "'");
                   }
                 } else if (k == "command") {
                   strings(v, "command", &s.command);
                 } else if (k == "url") {
                   if (scalar(v, "url", &s.url) && s.url.rfind("https://", 0) != 0 &&
                       s.url.rfind("http://", 0) != 0) {
                     fail(v, "MCP url must start with https:// or http://");
                   }
                 } else if (k == "allow") {
                   boolean(v, "allow", &s.allow);
                 } else if (k == "arguments") {
                   if (scalar(v, "arguments", &s.arguments) && s.arguments != "hash" &&
                       s.arguments != "redact" && s.arguments != "full") {
                     fail(v, "arguments must be hash, redact or full");
                   }
                 } else if (k == "tools") {
                   forEachKey(v, "tools", {"allow", "deny"},
                              [&](const std::string& tk, const YAML::Node&, const YAML::Node& tv) {
                                std::vector<std::string>* out =
                                    tk == "allow" ? &s.tools_allow : &s.tools_deny;
                                out->clear();
                                strings(tv, "tools." + tk, out);
                              });
                 }
               });
    if (!item.IsMap()) {
      return;
    }
    if (s.name.empty()) {
      fail(item, "MCP server has no name");
      return;
    }
    if (s.command.empty() == s.url.empty() && s.allow) {
      fail(item, "MCP server '" + s.name + "' needs exactly one of command, url");
    }
    if (s.meta.locked && s.allow && s.tools_deny.empty() &&
        (s.tools_allow.size() == 1 && s.tools_allow[0] == "*")) {
      fail(item, "locked: true on a server that allows every tool has no effect",
           "list the denied tools, or set allow: false");
    }
    if (s.meta.id.empty()) {
      s.meta.id = layer_ + ".mcp." + s.name;
    }
    layer->mcp_servers.push_back(std::move(s));
  }

  // ---- document ---------------------------------------------------------

  void document(const YAML::Node& root, Layer* layer) {
    if (root.IsNull()) {
      return;  // an empty file is an empty layer
    }
    // `layer:` names the rules' ids, so it is read before anything else.
    if (layer_from_file_ && root.IsMap() && root["layer"] && root["layer"].IsScalar()) {
      const std::string& s = root["layer"].Scalar();
      if (!s.empty() && s.find_first_of(" \t.\"") == std::string::npos) {
        layer->name = layer_ = s;
      }
    }
    forEachKey(root, "policy",
               {"version", "layer", "mode", "network", "filesystem", "env", "credentials", "mcp"},
               [&](const std::string& k, const YAML::Node&, const YAML::Node& v) {
                 if (k == "version") {
                   std::string s;
                   if (scalar(v, "version", &s) && s != "1") {
                     fail(v, "unsupported policy version '" + s + "'",
                          "this guard understands version: 1");
                   }
                 } else if (k == "layer") {
                   std::string s;
                   if (scalar(v, "layer", &s)) {
                     if (s.empty() || s.find_first_of(" \t.\"") != std::string::npos) {
                       fail(v, "layer must be a word without spaces, dots or quotes");
                     }
                   }
                 } else if (k == "mode") {
                   mode(v, &layer->mode);
                 } else if (k == "network") {
                   network(v, layer);
                 } else if (k == "filesystem") {
                   filesystem(v, layer);
                 } else if (k == "env") {
                   env(v, layer);
                 } else if (k == "credentials") {
                   credentials(v, layer);
                 } else if (k == "mcp") {
                   mcp(v, layer);
                 }
               });
  }

 public:
  bool layer_from_file_ = false;

 private:
  std::string file_;
  std::string layer_;
  std::vector<std::string> errors_;
  std::set<std::string> ids_;
  size_t nodes_ = 0;
  bool limit_hit_ = false;
};

}  // namespace

Result<std::shared_ptr<const Layer>> parseLayer(std::string_view text, std::string_view file,
                                                std::string_view layer) {
  // An empty LAYER lets the document's own `layer:` key name it (files given
  // with --policy); otherwise the role decides and `layer:` is ignored.
  std::string name(layer);
  if (name.empty()) {
    std::string_view stem = file.substr(file.find_last_of('/') + 1);
    stem = stem.substr(0, stem.find('.'));
    name = stem.empty() ? "policy" : std::string(stem);
  }
  Parser p(file, name);
  p.layer_from_file_ = layer.empty();
  return p.run(text);
}

Result<std::shared_ptr<const Layer>> loadLayerFile(const std::string& file,
                                                   std::string_view layer) {
  int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return Error(ErrorCode::kIo, file + ": error: cannot open: " + strerror(e), e);
  }
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int e = errno;
      close(fd);
      return Error(ErrorCode::kIo, file + ": error: cannot read: " + strerror(e), e);
    }
    if (n == 0) {
      break;
    }
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxDocumentBytes) {
      close(fd);
      return Error(ErrorCode::kPolicyLimit, file + ":1:1: error: policy file is larger than 1 MiB");
    }
  }
  close(fd);
  return parseLayer(text, file, layer);
}

}  // namespace guard::policy
