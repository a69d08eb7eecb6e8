// One nf_tables transaction built with libnftnl: a table of family inet,
// its base chains, anonymous constant sets and rules, sent to the kernel as
// one netlink batch (NFNL_MSG_BATCH_BEGIN ... NFNL_MSG_BATCH_END) that the
// kernel applies whole or not at all. The messages are the ones nft(8) sends
// for the same ruleset's text (the rule vocabulary below is named after its
// syntax), without libnftables' parser, evaluation and caches.
// Folder-internal: vmhost/netns.cc writes its rulesets with it.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

struct mnl_nlmsg_batch;
struct nftnl_expr;
struct nftnl_rule;

namespace guard::vmhost::nft {

// An anonymous constant set in the batch, for Rule::l4protoIn and
// Rule::dportIn (the kernel names it __setN when it commits).
struct Set {
  uint32_t id = 0;
};

// Rule is one rule's expressions, in order. Each matcher loads into
// register 1 and compares, as nft compiles the same words; a failed
// allocation is remembered and fails Batch::rule.
class Rule {
 public:
  Rule();
  ~Rule();
  Rule(const Rule&) = delete;
  Rule& operator=(const Rule&) = delete;

  Rule& nfproto(uint8_t family);                    // meta nfproto ipv4
  Rule& l4proto(uint8_t proto);                     // meta l4proto tcp
  Rule& l4protoIn(Set set);                         // meta l4proto { tcp, udp }
  Rule& iifname(const char* name, bool equal = true);  // iifname [!=] "NAME"
  Rule& ipDaddr(in_addr_t addr, int prefix);        // ip daddr A.B.C.D/PREFIX (network order)
  Rule& ip6Daddr(const in6_addr& addr);             // ip6 daddr ADDR
  Rule& dport(uint16_t port);                       // th|tcp|udp dport PORT
  Rule& dportIn(Set set);                           // tcp dport { ... }
  Rule& ctStatus(uint32_t bits);                    // ct status BITS (any of them)
  Rule& counter();                                  // counter
  Rule& log(uint16_t group);                        // log group GROUP
  Rule& accept();
  Rule& drop();
  Rule& ret();                                      // return
  Rule& redirect(uint16_t port);                    // redirect to :PORT

 private:
  friend class Batch;
  Rule& add(nftnl_expr* e);
  Rule& meta(uint32_t key);
  Rule& payload(uint32_t base, uint32_t offset, uint32_t len);
  Rule& cmp(uint32_t op, const void* data, uint32_t len);
  Rule& lookup(Set set);
  Rule& verdict(int32_t code);

  nftnl_rule* rule_;
  bool ok_;
};

// Batch collects the messages of one table's creation. Messages are
// encoded as they are added; the first failure (an allocation, a batch too
// large) is kept and reported by commit.
class Batch {
 public:
  explicit Batch(const char* table);
  ~Batch();
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  // A base chain: TYPE "filter" or "nat", HOOK an NF_INET_* hook, POLICY
  // NF_ACCEPT or NF_DROP.
  void chain(const char* name, const char* type, uint32_t hook, int32_t priority, uint32_t policy);
  // Anonymous constant sets of IP protocol numbers and of ports.
  Set l4protos(std::initializer_list<uint8_t> protos);
  Set ports(std::initializer_list<uint16_t> ports);
  // rule appends R to CHAIN (added before with chain()).
  void rule(const char* chain, Rule& r);

  // commit sends the batch, every message asking for an acknowledgement,
  // and reads the kernel's answers: true when it acknowledged every message
  // and committed. Otherwise false with *WHY naming what was refused (or
  // what failed before the kernel saw anything) and errno set.
  bool commit(std::string* why);

 private:
  enum class SetKey { kL4Proto, kPort };
  Set set(SetKey key, const std::vector<uint16_t>& values);
  char* current();
  bool next(const std::string& what);
  void fail(const std::string& why, int err);

  std::string table_;
  std::vector<char> buf_;
  mnl_nlmsg_batch* batch_;
  uint32_t seq_;
  uint32_t set_id_ = 0;
  std::vector<std::string> what_;  // per message since the batch's begin, by seq - first seq
  std::vector<int> rules_;         // rules per chain so far, for what_
  std::vector<std::string> chains_;
  std::string error_;
  int errno_ = 0;
};

}  // namespace guard::vmhost::nft
