// nf_tables messages with libnftnl, one batch over libmnl (nftables.h).
#include "vmhost/nftables.h"

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace guard::vmhost::nft {
namespace {

// The batch's limit: guard's tables take 3-5 KB. libmnl wants a buffer of
// twice the limit, the second half catching the message that overflows.
constexpr size_t kBatchLimit = 32768;

// An anonymous set's name: the kernel replaces %d when it commits.
constexpr char kAnonymousSet[] = "__set%d";

// What nft(8) records in an anonymous set's user data about its key, so
// that `nft list` prints the set as its text wrote it: the key's byte order
// (nft's BYTEORDER_HOST_ENDIAN 1, BYTEORDER_BIG_ENDIAN 2), the expression
// the key was taken from (nft's EXPR_PAYLOAD 7, EXPR_META 9) and that
// expression's own fields. The kernel stores these bytes and never reads
// them. Key types are nft's datatypes: TYPE_INET_PROTOCOL 12,
// TYPE_INET_SERVICE 13; PROTO_DESC_TCP 8 with its field TCPHDR_DPORT 2.
constexpr uint32_t kHostEndian = 1;
constexpr uint32_t kBigEndian = 2;
constexpr uint32_t kExprPayload = 7;
constexpr uint32_t kExprMeta = 9;
constexpr uint32_t kTypeInetProtocol = 12;
constexpr uint32_t kTypeInetService = 13;
constexpr uint32_t kProtoDescTcp = 8;
constexpr uint32_t kTcpDportField = 2;
// Inside the typeof data: a meta key is attribute 0; a payload's protocol
// description 0 and its field 1.
constexpr uint8_t kUdataMetaKey = 0;
constexpr uint8_t kUdataPayloadDesc = 0;
constexpr uint8_t kUdataPayloadType = 1;

}  // namespace

// ---- Rule --------------------------------------------------------------------

Rule::Rule() : rule_(nftnl_rule_alloc()), ok_(rule_ != nullptr) {}

Rule::~Rule() {
  if (rule_ != nullptr) {
    nftnl_rule_free(rule_);  // and its expressions
  }
}

Rule& Rule::add(nftnl_expr* e) {
  if (e == nullptr || rule_ == nullptr) {
    ok_ = false;
    if (e != nullptr) {
      nftnl_expr_free(e);
    }
    return *this;
  }
  nftnl_rule_add_expr(rule_, e);
  return *this;
}

Rule& Rule::meta(uint32_t key) {
  nftnl_expr* e = nftnl_expr_alloc("meta");
  if (e != nullptr) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
  }
  return add(e);
}

Rule& Rule::payload(uint32_t base, uint32_t offset, uint32_t len) {
  nftnl_expr* e = nftnl_expr_alloc("payload");
  if (e != nullptr) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  }
  return add(e);
}

Rule& Rule::cmp(uint32_t op, const void* data, uint32_t len) {
  nftnl_expr* e = nftnl_expr_alloc("cmp");
  if (e != nullptr) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
    if (nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len) != 0) {
      nftnl_expr_free(e);
      e = nullptr;
    }
  }
  return add(e);
}

Rule& Rule::lookup(Set set) {
  nftnl_expr* e = nftnl_expr_alloc("lookup");
  if (e != nullptr) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
    nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, kAnonymousSet);
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, set.id);
  }
  if (set.id == 0) {
    ok_ = false;  // a set the batch could not add
  }
  return add(e);
}

Rule& Rule::verdict(int32_t code) {
  nftnl_expr* e = nftnl_expr_alloc("immediate");
  if (e != nullptr) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(code));
  }
  return add(e);
}

Rule& Rule::nfproto(uint8_t family) { return meta(NFT_META_NFPROTO).cmp(NFT_CMP_EQ, &family, 1); }

Rule& Rule::l4proto(uint8_t proto) { return meta(NFT_META_L4PROTO).cmp(NFT_CMP_EQ, &proto, 1); }

Rule& Rule::l4protoIn(Set set) { return meta(NFT_META_L4PROTO).lookup(set); }

// The interface name is compared whole: IFNAMSIZ bytes, zero-padded, so
// "guard0" never matches "guard01".
Rule& Rule::iifname(const char* name, bool equal) {
  char padded[IFNAMSIZ] = {};
  size_t n = strlen(name);
  if (n >= sizeof(padded)) {
    ok_ = false;
    return *this;
  }
  memcpy(padded, name, n);
  return meta(NFT_META_IIFNAME).cmp(equal ? NFT_CMP_EQ : NFT_CMP_NEQ, padded, sizeof(padded));
}

// As nft compiles a prefix: one that ends on a byte boundary loads and
// compares only the bytes it covers; any other loads the whole address and
// masks it first.
Rule& Rule::ipDaddr(in_addr_t addr, int prefix) {
  if (prefix <= 0 || prefix > 32) {
    ok_ = false;
    return *this;
  }
  bool whole_bytes = prefix % 8 == 0;
  uint32_t len = whole_bytes ? static_cast<uint32_t>(prefix / 8) : sizeof(addr);
  uint32_t mask = htonl(~uint32_t{0} << (32 - prefix));
  uint32_t value = addr & mask;
  nfproto(NFPROTO_IPV4).payload(NFT_PAYLOAD_NETWORK_HEADER, offsetof(iphdr, daddr), len);
  if (!whole_bytes) {
    nftnl_expr* e = nftnl_expr_alloc("bitwise");
    uint32_t zero = 0;
    if (e != nullptr) {
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
      nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &mask, len);
      nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &zero, len);
    }
    add(e);
  }
  return cmp(NFT_CMP_EQ, &value, len);
}

Rule& Rule::ip6Daddr(const in6_addr& addr) {
  return nfproto(NFPROTO_IPV6)
      .payload(NFT_PAYLOAD_NETWORK_HEADER, offsetof(ip6_hdr, ip6_dst), sizeof(addr))
      .cmp(NFT_CMP_EQ, &addr, sizeof(addr));
}

// The destination port is bytes 2-3 of both the TCP and the UDP header.
Rule& Rule::dport(uint16_t port) {
  uint16_t be = htons(port);
  return payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).cmp(NFT_CMP_EQ, &be, 2);
}

Rule& Rule::dportIn(Set set) { return payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).lookup(set); }

// ct status is a host-order word: any of BITS set.
Rule& Rule::ctStatus(uint32_t bits) {
  nftnl_expr* ct = nftnl_expr_alloc("ct");
  if (ct != nullptr) {
    nftnl_expr_set_u32(ct, NFTNL_EXPR_CT_KEY, NFT_CT_STATUS);
    nftnl_expr_set_u32(ct, NFTNL_EXPR_CT_DREG, NFT_REG_1);
  }
  add(ct);
  nftnl_expr* e = nftnl_expr_alloc("bitwise");
  uint32_t zero = 0;
  if (e != nullptr) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, sizeof(bits));
    nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &bits, sizeof(bits));
    nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &zero, sizeof(zero));
  }
  add(e);
  return cmp(NFT_CMP_NEQ, &zero, sizeof(zero));
}

Rule& Rule::counter() { return add(nftnl_expr_alloc("counter")); }

Rule& Rule::log(uint16_t group) {
  nftnl_expr* e = nftnl_expr_alloc("log");
  if (e != nullptr) {
    nftnl_expr_set_u16(e, NFTNL_EXPR_LOG_GROUP, group);
  }
  return add(e);
}

Rule& Rule::accept() { return verdict(NF_ACCEPT); }

Rule& Rule::drop() { return verdict(NF_DROP); }

Rule& Rule::ret() { return verdict(NFT_RETURN); }

// The port goes to register 1 and redir takes it from there, as
// `redirect to :PORT` compiles (without a maximum register the kernel uses
// the minimum's: one port).
Rule& Rule::redirect(uint16_t port) {
  uint16_t be = htons(port);
  nftnl_expr* imm = nftnl_expr_alloc("immediate");
  if (imm != nullptr) {
    nftnl_expr_set_u32(imm, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
    nftnl_expr_set(imm, NFTNL_EXPR_IMM_DATA, &be, sizeof(be));
  }
  add(imm);
  nftnl_expr* e = nftnl_expr_alloc("redir");
  if (e != nullptr) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
  }
  return add(e);
}

// ---- Batch -------------------------------------------------------------------

Batch::Batch(const char* table)
    : table_(table), buf_(2 * kBatchLimit), batch_(mnl_nlmsg_batch_start(buf_.data(), kBatchLimit)), seq_(1) {
  if (batch_ == nullptr) {
    fail("nftables: no memory for the batch", ENOMEM);
    return;
  }
  nftnl_batch_begin(current(), seq_);
  if (!next("the batch")) {
    return;
  }
  nftnl_table* t = nftnl_table_alloc();
  if (t == nullptr) {
    fail("nftables: no memory for table " + table_, ENOMEM);
    return;
  }
  nftnl_table_set_str(t, NFTNL_TABLE_NAME, table);
  nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, 0);
  // As nft adds a table: created when missing, without NLM_F_CREATE.
  nlmsghdr* nh = nftnl_nlmsg_build_hdr(current(), NFT_MSG_NEWTABLE, NFPROTO_INET, NLM_F_ACK, seq_);
  nftnl_table_nlmsg_build_payload(nh, t);
  nftnl_table_free(t);
  next("table inet " + table_);
}

Batch::~Batch() {
  if (batch_ != nullptr) {
    mnl_nlmsg_batch_stop(batch_);
  }
}

void Batch::fail(const std::string& why, int err) {
  if (error_.empty()) {
    error_ = why;
    errno_ = err;
  }
}

// current is where the next message is written.
char* Batch::current() { return static_cast<char*>(mnl_nlmsg_batch_current(batch_)); }

// next closes the message just written at the batch's current position,
// which WHAT describes in the kernel's answers.
bool Batch::next(const std::string& what) {
  if (!error_.empty()) {
    return false;
  }
  if (!mnl_nlmsg_batch_next(batch_)) {
    fail("nftables: the rules do not fit one batch", EMSGSIZE);
    return false;
  }
  what_.push_back(what);
  ++seq_;
  return true;
}

void Batch::chain(const char* name, const char* type, uint32_t hook, int32_t priority, uint32_t policy) {
  if (!error_.empty()) {
    return;
  }
  nftnl_chain* c = nftnl_chain_alloc();
  if (c == nullptr) {
    fail(std::string("nftables: no memory for chain ") + name, ENOMEM);
    return;
  }
  nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, table_.c_str());
  nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
  nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, type);
  nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, hook);
  nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, priority);
  nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, policy);
  nlmsghdr* nh = nftnl_nlmsg_build_hdr(current(), NFT_MSG_NEWCHAIN,
                                       NFPROTO_INET, NLM_F_CREATE | NLM_F_ACK, seq_);
  nftnl_chain_nlmsg_build_payload(nh, c);
  nftnl_chain_free(c);
  if (next(std::string("chain ") + name)) {
    chains_.emplace_back(name);
    rules_.push_back(0);
  }
}

Set Batch::l4protos(std::initializer_list<uint8_t> protos) {
  return set(SetKey::kL4Proto, std::vector<uint16_t>(protos.begin(), protos.end()));
}

Set Batch::ports(std::initializer_list<uint16_t> ports) { return set(SetKey::kPort, std::vector<uint16_t>(ports)); }

// set adds an anonymous constant set (NFT_SET_ANONYMOUS | NFT_SET_CONSTANT)
// and its elements, as two messages; a rule later in the batch finds it by
// its id. Returns id 0 when it could not be added.
Set Batch::set(SetKey key, const std::vector<uint16_t>& values) {
  if (!error_.empty()) {
    return Set{};
  }
  bool proto = key == SetKey::kL4Proto;
  uint32_t key_len = proto ? 1 : 2;
  uint32_t id = set_id_ + 1;
  nftnl_set* s = nftnl_set_alloc();
  nftnl_udata_buf* ud = nftnl_udata_buf_alloc(64);
  bool ok = s != nullptr && ud != nullptr;
  if (ok) {
    nftnl_udata_put_u32(ud, NFTNL_UDATA_SET_KEYBYTEORDER, proto ? kHostEndian : kBigEndian);
    nftnl_udata* type_of = nftnl_udata_nest_start(ud, NFTNL_UDATA_SET_KEY_TYPEOF);
    nftnl_udata_put_u32(ud, NFTNL_UDATA_SET_TYPEOF_EXPR, proto ? kExprMeta : kExprPayload);
    nftnl_udata* data = nftnl_udata_nest_start(ud, NFTNL_UDATA_SET_TYPEOF_DATA);
    if (proto) {
      nftnl_udata_put_u32(ud, kUdataMetaKey, NFT_META_L4PROTO);
    } else {
      nftnl_udata_put_u32(ud, kUdataPayloadDesc, kProtoDescTcp);
      nftnl_udata_put_u32(ud, kUdataPayloadType, kTcpDportField);
    }
    nftnl_udata_nest_end(ud, data);
    nftnl_udata_nest_end(ud, type_of);

    nftnl_set_set_str(s, NFTNL_SET_TABLE, table_.c_str());
    nftnl_set_set_str(s, NFTNL_SET_NAME, kAnonymousSet);
    nftnl_set_set_u32(s, NFTNL_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
    nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE, proto ? kTypeInetProtocol : kTypeInetService);
    nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, key_len);
    nftnl_set_set_u32(s, NFTNL_SET_ID, id);
    nftnl_set_set_u32(s, NFTNL_SET_DESC_SIZE, static_cast<uint32_t>(values.size()));
    ok = nftnl_set_set_data(s, NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud)) == 0;
  }
  for (size_t i = 0; ok && i < values.size(); ++i) {
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    uint8_t byte = static_cast<uint8_t>(values[i]);
    uint16_t be = htons(values[i]);
    ok = e != nullptr && nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, proto ? static_cast<const void*>(&byte) : &be,
                                            key_len) == 0;
    if (ok) {
      nftnl_set_elem_add(s, e);  // the set owns it now
    } else if (e != nullptr) {
      nftnl_set_elem_free(e);
    }
  }
  if (ud != nullptr) {
    nftnl_udata_buf_free(ud);
  }
  if (!ok) {
    if (s != nullptr) {
      nftnl_set_free(s);
    }
    fail("nftables: no memory for a set", ENOMEM);
    return Set{};
  }
  std::string what = std::string("set { ") + (proto ? "l4proto" : "tcp dport") + " }";
  nlmsghdr* nh = nftnl_nlmsg_build_hdr(current(), NFT_MSG_NEWSET,
                                       NFPROTO_INET, NLM_F_CREATE | NLM_F_ACK, seq_);
  nftnl_set_nlmsg_build_payload(nh, s);
  if (next(what)) {
    nh = nftnl_nlmsg_build_hdr(current(), NFT_MSG_NEWSETELEM,
                               NFPROTO_INET, NLM_F_CREATE | NLM_F_ACK, seq_);
    nftnl_set_elems_nlmsg_build_payload(nh, s);
    next("the elements of " + what);
  }
  nftnl_set_free(s);
  if (!error_.empty()) {
    return Set{};
  }
  set_id_ = id;
  return Set{id};
}

void Batch::rule(const char* chain, Rule& r) {
  if (!error_.empty()) {
    return;
  }
  size_t c = 0;
  while (c < chains_.size() && chains_[c] != chain) {
    ++c;
  }
  std::string what = "rule " + std::to_string(c < rules_.size() ? rules_[c] + 1 : 1) + " of chain " + chain;
  if (c == chains_.size()) {
    fail("nftables: " + what + " is for a chain the batch does not have", EINVAL);
    return;
  }
  if (!r.ok_) {
    fail("nftables: could not build " + what, ENOMEM);
    return;
  }
  nftnl_rule_set_str(r.rule_, NFTNL_RULE_TABLE, table_.c_str());
  nftnl_rule_set_str(r.rule_, NFTNL_RULE_CHAIN, chain);
  nftnl_rule_set_u32(r.rule_, NFTNL_RULE_FAMILY, NFPROTO_INET);
  nlmsghdr* nh = nftnl_nlmsg_build_hdr(current(), NFT_MSG_NEWRULE,
                                       NFPROTO_INET, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq_);
  nftnl_rule_nlmsg_build_payload(nh, r.rule_);
  if (next(what)) {
    ++rules_[c];
  }
}

// The kernel handles a batch inside sendmsg: by the time it returns, every
// acknowledgement and error is queued on the socket, so the answers are
// read without waiting. Each message but the batch's begin and end asked
// for one: a message without its acknowledgement is a failure too.
bool Batch::commit(std::string* why) {
  if (error_.empty()) {
    nftnl_batch_end(current(), seq_);
    next("the batch's end");
  }
  if (!error_.empty()) {
    *why = error_;
    errno = errno_;
    return false;
  }
  const uint32_t first = 1;
  size_t expected = what_.size() - 2;  // not the begin and the end
  mnl_socket* nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (nl == nullptr || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) != 0) {
    int e = errno;
    *why = "nftables: netlink socket";
    if (nl != nullptr) {
      mnl_socket_close(nl);
    }
    errno = e;
    return false;
  }
  size_t size = mnl_nlmsg_batch_size(batch_);
  if (mnl_socket_sendto(nl, mnl_nlmsg_batch_head(batch_), size) != static_cast<ssize_t>(size)) {
    int e = errno;
    mnl_socket_close(nl);
    *why = "nftables: send the batch";
    errno = e;
    return false;
  }
  size_t acked = 0;
  int refused = 0;
  std::string refused_what;
  alignas(nlmsghdr) char reply[MNL_SOCKET_BUFFER_SIZE];
  for (;;) {
    ssize_t n = recv(mnl_socket_get_fd(nl), reply, sizeof(reply), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    }
    if (n <= 0) {
      int e = n < 0 ? errno : EPROTO;
      mnl_socket_close(nl);
      *why = "nftables: read the kernel's answers";
      errno = e;
      return false;
    }
    int len = static_cast<int>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(reply); mnl_nlmsg_ok(nh, len);
         nh = mnl_nlmsg_next(nh, &len)) {
      if (nh->nlmsg_type != NLMSG_ERROR || nh->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) {
        continue;
      }
      int err = -static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(nh))->error;
      if (err == 0) {
        ++acked;
      } else if (refused == 0) {
        refused = err;
        uint32_t i = nh->nlmsg_seq - first;
        refused_what = i < what_.size() ? what_[i] : "message " + std::to_string(nh->nlmsg_seq);
      }
    }
  }
  mnl_socket_close(nl);
  if (refused != 0) {
    *why = "nftables: the kernel refused " + refused_what;
    errno = refused;
    return false;
  }
  if (acked != expected) {
    *why = "nftables: the kernel acknowledged " + std::to_string(acked) + " of " + std::to_string(expected) +
           " messages";
    errno = EPROTO;
    return false;
  }
  return true;
}

}  // namespace guard::vmhost::nft
