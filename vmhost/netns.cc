// Network namespace setup: routes (rtnetlink), nftables rules (one
// nfnetlink batch in host mode, libnftables in VM mode), the proxy's
// listeners (handed over with SCM_RIGHTS).
#include "vmhost/netns.h"

#include <arpa/inet.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <nftables/libnftables.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <vector>

#include "policy/wire.h"
#include "vmhost/vm_wire.h"

namespace guard::vmhost {
namespace {

// addLocalDefault is `ip route add local default dev lo` for FAMILY: every
// address counts as local, so a connect to any address reaches the nftables
// output hook (and is redirected) instead of failing with ENETUNREACH.
bool addLocalDefault(int family) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) {
    return false;
  }
  struct {
    nlmsghdr nh;
    rtmsg rt;
    char attrs[64];
  } req{};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  req.nh.nlmsg_type = RTM_NEWROUTE;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
  req.nh.nlmsg_seq = 1;
  req.rt.rtm_family = static_cast<unsigned char>(family);
  req.rt.rtm_table = RT_TABLE_MAIN;
  req.rt.rtm_protocol = RTPROT_BOOT;
  req.rt.rtm_scope = RT_SCOPE_HOST;
  req.rt.rtm_type = RTN_LOCAL;
  int lo = static_cast<int>(if_nametoindex("lo"));
  auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) + NLMSG_ALIGN(req.nh.nlmsg_len));
  rta->rta_type = RTA_OIF;
  rta->rta_len = RTA_LENGTH(sizeof(int));
  memcpy(RTA_DATA(rta), &lo, sizeof(int));
  req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  bool ok = sendto(s, &req, req.nh.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) >= 0;
  char reply[512];
  ssize_t n = ok ? recv(s, reply, sizeof(reply), 0) : -1;
  int saved = errno;
  close(s);
  if (n < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr)))) {
    errno = n < 0 ? saved : EPROTO;
    return false;
  }
  auto* nh = reinterpret_cast<nlmsghdr*>(reply);
  if (nh->nlmsg_type == NLMSG_ERROR) {
    int err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(nh))->error;
    if (err != 0) {
      errno = err;
      return false;
    }
  }
  return true;
}

// interfaceUp gives interface NAME the address ADDR/24 (when not null) and
// brings it up.
bool interfaceUp(const char* name, const char* addr) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    return false;
  }
  struct ifreq ifr {};
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  bool ok = true;
  if (addr != nullptr) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
    sin->sin_family = AF_INET;
    ok = inet_pton(AF_INET, addr, &sin->sin_addr) == 1 && ioctl(s, SIOCSIFADDR, &ifr) == 0;
    sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_netmask);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(0xffffff00u);
    ok = ok && ioctl(s, SIOCSIFNETMASK, &ifr) == 0;
  }
  ok = ok && ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  ok = ok && ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
  int e = errno;
  close(s);
  errno = e;
  return ok;
}

// NfBatch builds one nfnetlink batch of nf_tables messages: netlink
// headers, the nfgenmsg header, attributes (nested ones included) in the
// kernel's byte layout. Every nf_tables message in it asks for an
// acknowledgement.
class NfBatch {
 public:
  NfBatch() { message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES); end(); }

  // begin starts an nf_tables message of TYPE (NFT_MSG_*) for FAMILY.
  void begin(uint16_t type, uint16_t flags, uint8_t family) {
    message(static_cast<uint16_t>((NFNL_SUBSYS_NFTABLES << 8) | type),
            static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags), family, 0);
  }
  // end closes the message begun last.
  void end() {
    auto* nh = reinterpret_cast<nlmsghdr*>(buf_.data() + msg_);
    nh->nlmsg_len = static_cast<uint32_t>(buf_.size() - msg_);
  }
  // finish appends the batch's end and returns the bytes to send.
  const std::vector<uint8_t>& finish() {
    message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    end();
    return buf_;
  }

  void put(uint16_t type, const void* data, size_t len) {
    nlattr a{};
    a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
    a.nla_type = type;
    append(&a, sizeof(a));
    append(data, len);
    pad();
  }
  void putU32(uint16_t type, uint32_t host) {
    uint32_t be = htonl(host);
    put(type, &be, sizeof(be));
  }
  void putStr(uint16_t type, const char* text) { put(type, text, strlen(text) + 1); }
  // nest opens a nested attribute; close it with unnest(the returned offset).
  size_t nest(uint16_t type) {
    size_t at = buf_.size();
    nlattr a{};
    a.nla_type = static_cast<uint16_t>(type | NLA_F_NESTED);
    append(&a, sizeof(a));
    return at;
  }
  void unnest(size_t at) {
    reinterpret_cast<nlattr*>(buf_.data() + at)->nla_len = static_cast<uint16_t>(buf_.size() - at);
  }

 private:
  void message(uint16_t type, uint16_t flags, uint8_t family, uint16_t res_id) {
    msg_ = buf_.size();
    nlmsghdr nh{};
    nh.nlmsg_type = type;
    nh.nlmsg_flags = flags;
    nh.nlmsg_seq = seq_++;
    append(&nh, sizeof(nh));
    nfgenmsg nf{};
    nf.nfgen_family = family;
    nf.version = NFNETLINK_V0;
    nf.res_id = htons(res_id);
    append(&nf, sizeof(nf));
  }
  void append(const void* data, size_t len) {
    const auto* p = static_cast<const uint8_t*>(data);
    buf_.insert(buf_.end(), p, p + len);
  }
  void pad() { buf_.resize(NLA_ALIGN(buf_.size()), 0); }

  std::vector<uint8_t> buf_;
  size_t msg_ = 0;
  uint32_t seq_ = 0;
};

// Expressions of a rule, as nft(8) encodes them (libnftnl's attribute
// order), so the kernel holds what `nft -f` of the same text would load.
class RuleBuilder {
 public:
  RuleBuilder(NfBatch* b, const char* table, const char* chain) : b_(b) {
    b_->begin(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, NFPROTO_INET);
    b_->putStr(NFTA_RULE_TABLE, table);
    b_->putStr(NFTA_RULE_CHAIN, chain);
    list_ = b_->nest(NFTA_RULE_EXPRESSIONS);
  }
  ~RuleBuilder() {
    b_->unnest(list_);
    b_->end();
  }
  RuleBuilder& meta(uint32_t key) {
    size_t d = expr("meta");
    b_->putU32(NFTA_META_KEY, key);
    b_->putU32(NFTA_META_DREG, NFT_REG_1);
    return done(d);
  }
  RuleBuilder& ct(uint32_t key) {
    size_t d = expr("ct");
    b_->putU32(NFTA_CT_KEY, key);
    b_->putU32(NFTA_CT_DREG, NFT_REG_1);
    return done(d);
  }
  RuleBuilder& payload(uint32_t base, uint32_t offset, uint32_t len) {
    size_t d = expr("payload");
    b_->putU32(NFTA_PAYLOAD_DREG, NFT_REG_1);
    b_->putU32(NFTA_PAYLOAD_BASE, base);
    b_->putU32(NFTA_PAYLOAD_OFFSET, offset);
    b_->putU32(NFTA_PAYLOAD_LEN, len);
    return done(d);
  }
  RuleBuilder& cmp(uint32_t op, const void* data, size_t len) {
    size_t d = expr("cmp");
    b_->putU32(NFTA_CMP_SREG, NFT_REG_1);
    b_->putU32(NFTA_CMP_OP, op);
    value(NFTA_CMP_DATA, data, len);
    return done(d);
  }
  RuleBuilder& bitwise(const void* mask, const void* x, uint32_t len) {
    size_t d = expr("bitwise");
    b_->putU32(NFTA_BITWISE_SREG, NFT_REG_1);
    b_->putU32(NFTA_BITWISE_DREG, NFT_REG_1);
    b_->putU32(NFTA_BITWISE_LEN, len);
    value(NFTA_BITWISE_MASK, mask, len);
    value(NFTA_BITWISE_XOR, x, len);
    return done(d);
  }
  RuleBuilder& lookup(const char* set, uint32_t set_id) {
    size_t d = expr("lookup");
    b_->putU32(NFTA_LOOKUP_SREG, NFT_REG_1);
    b_->putStr(NFTA_LOOKUP_SET, set);
    b_->putU32(NFTA_LOOKUP_SET_ID, set_id);
    return done(d);
  }
  RuleBuilder& immediate(const void* data, size_t len) {
    size_t d = expr("immediate");
    b_->putU32(NFTA_IMMEDIATE_DREG, NFT_REG_1);
    value(NFTA_IMMEDIATE_DATA, data, len);
    return done(d);
  }
  RuleBuilder& verdict(int code) {
    size_t d = expr("immediate");
    b_->putU32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
    size_t data = b_->nest(NFTA_IMMEDIATE_DATA);
    size_t v = b_->nest(NFTA_DATA_VERDICT);
    b_->putU32(NFTA_VERDICT_CODE, static_cast<uint32_t>(code));
    b_->unnest(v);
    b_->unnest(data);
    return done(d);
  }
  RuleBuilder& redirect() {
    size_t d = expr("redir");
    b_->putU32(NFTA_REDIR_REG_PROTO_MIN, NFT_REG_1);
    b_->putU32(NFTA_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
    return done(d);
  }
  RuleBuilder& counter() { return done(expr("counter")); }
  RuleBuilder& log(uint16_t group) {
    size_t d = expr("log");
    uint16_t be = htons(group);
    b_->put(NFTA_LOG_GROUP, &be, sizeof(be));
    return done(d);
  }

 private:
  // expr opens one element of the expression list and its data.
  size_t expr(const char* name) {
    elem_ = b_->nest(NFTA_LIST_ELEM);
    b_->putStr(NFTA_EXPR_NAME, name);
    return b_->nest(NFTA_EXPR_DATA);
  }
  RuleBuilder& done(size_t data) {
    b_->unnest(data);
    b_->unnest(elem_);
    return *this;
  }
  void value(uint16_t type, const void* data, size_t len) {
    size_t v = b_->nest(type);
    b_->put(NFTA_DATA_VALUE, data, len);
    b_->unnest(v);
  }

  NfBatch* b_;
  size_t list_ = 0;
  size_t elem_ = 0;
};

// hostRules: the agent's own namespace, the table `inet guard` that this
// nft(8) text describes, built as the batch `nft -f` sends for it (no
// parser, no cache of the kernel's tables: the namespace is new):
//
//   table inet guard {
//     chain capture {
//       type nat hook output priority -100; policy accept;
//       meta l4proto { tcp, udp } th dport 53 redirect to :53
//       ip daddr 127.0.0.0/8 return
//       ip6 daddr ::1 return
//       meta l4proto tcp redirect to :PROXY_PORT
//     }
//     chain only_loopback {
//       type filter hook output priority 0; policy drop;
//       ip daddr 127.0.0.0/8 accept
//       ip6 daddr ::1 accept
//       ct status dnat accept
//       counter log group 7 drop
//     }
//   }
//
// The loopback of the namespace stays the agent's own (its dev servers, its
// tests); everything else is captured or dropped. Dropped packets go to
// NFLOG group 7 and a counter. With every address local, a flow's source is
// the address it was sent to, so the proxy's replies to a redirected flow
// leave for a non-loopback address: conntrack knows them (ct status dnat:
// both directions of a redirected flow).
// tests/integration/startup_test.cc checks that the kernel lists exactly
// what `nft -f` of the text loads.
std::vector<uint8_t> hostRules(uint16_t proxy_port) {
  constexpr const char* kTable = "guard";
  constexpr const char* kSet = "__set%d";  // an anonymous set: the kernel numbers it
  constexpr uint32_t kSetId = 1;
  NfBatch b;
  b.begin(NFT_MSG_NEWTABLE, 0, NFPROTO_INET);
  b.putStr(NFTA_TABLE_NAME, kTable);
  b.putU32(NFTA_TABLE_FLAGS, 0);
  b.end();
  struct Chain {
    const char* name;
    const char* type;
    uint32_t policy;
    int32_t priority;
  };
  for (Chain c : {Chain{"capture", "nat", NF_ACCEPT, -100}, Chain{"only_loopback", "filter", NF_DROP, 0}}) {
    b.begin(NFT_MSG_NEWCHAIN, NLM_F_CREATE, NFPROTO_INET);
    b.putStr(NFTA_CHAIN_TABLE, kTable);
    b.putStr(NFTA_CHAIN_NAME, c.name);
    b.putStr(NFTA_CHAIN_TYPE, c.type);
    b.putU32(NFTA_CHAIN_POLICY, c.policy);
    size_t hook = b.nest(NFTA_CHAIN_HOOK);
    b.putU32(NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_OUT);
    b.putU32(NFTA_HOOK_PRIORITY, static_cast<uint32_t>(c.priority));
    b.unnest(hook);
    b.end();
  }
  // { tcp, udp }: an anonymous constant set of inet_proto (nft's type 12),
  // with the user data nft keeps to print it back.
  static const uint8_t kSetUserData[] = {0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x03, 0x0e,
                                         0x00, 0x04, 0x09, 0x00, 0x00, 0x00, 0x01, 0x06,
                                         0x00, 0x04, 0x10, 0x00, 0x00, 0x00};
  b.begin(NFT_MSG_NEWSET, NLM_F_CREATE, NFPROTO_INET);
  b.putStr(NFTA_SET_TABLE, kTable);
  b.putStr(NFTA_SET_NAME, kSet);
  b.putU32(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
  b.putU32(NFTA_SET_KEY_TYPE, 12);
  b.putU32(NFTA_SET_KEY_LEN, 1);
  b.putU32(NFTA_SET_ID, kSetId);
  size_t desc = b.nest(NFTA_SET_DESC);
  b.putU32(NFTA_SET_DESC_SIZE, 2);
  b.unnest(desc);
  b.put(NFTA_SET_USERDATA, kSetUserData, sizeof(kSetUserData));
  b.end();
  b.begin(NFT_MSG_NEWSETELEM, NLM_F_CREATE, NFPROTO_INET);
  b.putStr(NFTA_SET_ELEM_LIST_TABLE, kTable);
  b.putStr(NFTA_SET_ELEM_LIST_SET, kSet);
  b.putU32(NFTA_SET_ELEM_LIST_SET_ID, kSetId);
  size_t elems = b.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
  uint16_t index = 1;
  for (uint8_t proto : {uint8_t{IPPROTO_TCP}, uint8_t{IPPROTO_UDP}}) {
    size_t elem = b.nest(index++);
    size_t key = b.nest(NFTA_SET_ELEM_KEY);
    b.put(NFTA_DATA_VALUE, &proto, sizeof(proto));
    b.unnest(key);
    b.unnest(elem);
  }
  b.unnest(elems);
  b.end();

  const uint8_t ipv4 = NFPROTO_IPV4;
  const uint8_t ipv6 = NFPROTO_IPV6;
  const uint8_t tcp = IPPROTO_TCP;
  const uint8_t loopback_net = 127;  // 127.0.0.0/8: the first byte
  const in6_addr loopback6 = IN6ADDR_LOOPBACK_INIT;
  const uint16_t dns = htons(53);
  const uint16_t proxy = htons(proxy_port);
  const uint32_t dnat = IPS_DST_NAT;  // ct status is in host byte order
  const uint32_t zero = 0;
  constexpr uint32_t kDaddr4 = offsetof(iphdr, daddr);
  constexpr uint32_t kDaddr6 = offsetof(ip6_hdr, ip6_dst);
  {
    RuleBuilder r(&b, kTable, "capture");  // meta l4proto { tcp, udp } th dport 53 redirect to :53
    r.meta(NFT_META_L4PROTO).lookup(kSet, kSetId);
    r.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).cmp(NFT_CMP_EQ, &dns, sizeof(dns));
    r.immediate(&dns, sizeof(dns)).redirect();
  }
  {
    RuleBuilder r(&b, kTable, "capture");  // ip daddr 127.0.0.0/8 return
    r.meta(NFT_META_NFPROTO).cmp(NFT_CMP_EQ, &ipv4, 1);
    r.payload(NFT_PAYLOAD_NETWORK_HEADER, kDaddr4, 1).cmp(NFT_CMP_EQ, &loopback_net, 1);
    r.verdict(NFT_RETURN);
  }
  {
    RuleBuilder r(&b, kTable, "capture");  // ip6 daddr ::1 return
    r.meta(NFT_META_NFPROTO).cmp(NFT_CMP_EQ, &ipv6, 1);
    r.payload(NFT_PAYLOAD_NETWORK_HEADER, kDaddr6, 16).cmp(NFT_CMP_EQ, &loopback6, 16);
    r.verdict(NFT_RETURN);
  }
  {
    RuleBuilder r(&b, kTable, "capture");  // meta l4proto tcp redirect to :PROXY_PORT
    r.meta(NFT_META_L4PROTO).cmp(NFT_CMP_EQ, &tcp, 1);
    r.immediate(&proxy, sizeof(proxy)).redirect();
  }
  {
    RuleBuilder r(&b, kTable, "only_loopback");  // ip daddr 127.0.0.0/8 accept
    r.meta(NFT_META_NFPROTO).cmp(NFT_CMP_EQ, &ipv4, 1);
    r.payload(NFT_PAYLOAD_NETWORK_HEADER, kDaddr4, 1).cmp(NFT_CMP_EQ, &loopback_net, 1);
    r.verdict(NF_ACCEPT);
  }
  {
    RuleBuilder r(&b, kTable, "only_loopback");  // ip6 daddr ::1 accept
    r.meta(NFT_META_NFPROTO).cmp(NFT_CMP_EQ, &ipv6, 1);
    r.payload(NFT_PAYLOAD_NETWORK_HEADER, kDaddr6, 16).cmp(NFT_CMP_EQ, &loopback6, 16);
    r.verdict(NF_ACCEPT);
  }
  {
    RuleBuilder r(&b, kTable, "only_loopback");  // ct status dnat accept
    r.ct(NFT_CT_STATUS).bitwise(&dnat, &zero, sizeof(dnat)).cmp(NFT_CMP_NEQ, &zero, sizeof(zero));
    r.verdict(NF_ACCEPT);
  }
  {
    RuleBuilder r(&b, kTable, "only_loopback");  // counter log group 7 drop
    r.counter().log(7).verdict(NF_DROP);
  }
  return b.finish();
}

// sendBatch sends BATCH (NUM_ACKED messages asking for an acknowledgement)
// to nf_tables and waits for every acknowledgement. Returns false with
// errno set (the kernel's error for the first message it refused, or for
// the commit) unless all of them were accepted.
bool sendBatch(const std::vector<uint8_t>& batch, int num_acked) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (s < 0) {
    return false;
  }
  timeval timeout{5, 0};  // the kernel answers within the sendmsg; never hang
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  int err = 0;
  if (sendto(s, batch.data(), batch.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof(kernel)) != static_cast<ssize_t>(batch.size())) {
    err = errno != 0 ? errno : EIO;
  }
  int acked = 0;
  alignas(nlmsghdr) char reply[16384];
  while (err == 0 && acked < num_acked) {
    ssize_t n = recv(s, reply, sizeof(reply), 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      err = n < 0 ? errno : EPROTO;
      break;
    }
    int len = static_cast<int>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(reply); NLMSG_OK(nh, len) && err == 0;
         nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_type != NLMSG_ERROR ||
          nh->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) {
        err = EPROTO;  // nothing but acknowledgements is expected
        break;
      }
      int e = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(nh))->error;
      if (e != 0) {
        err = e;
      } else {
        ++acked;
      }
    }
  }
  close(s);
  errno = err;
  return err == 0;
}

// vmRules: the namespace QEMU runs in, where the guest's packets arrive on
// the tap device. Every TCP connection is redirected to the proxy, DNS to
// the responder (both listen on the tap's address); everything else the
// guest sends (other UDP, ICMP, IPv6) is dropped, audited through NFLOG.
std::string vmRules(uint16_t proxy_port) {
  return std::string("table inet guard {\n") +
         "  chain guest_only {\n"
         "    type filter hook prerouting priority -150; policy accept;\n"
         "    iifname != \"" + kTapName + "\" accept\n"
         "    meta nfproto ipv4 meta l4proto tcp accept\n"
         "    meta nfproto ipv4 meta l4proto udp udp dport 53 accept\n"
         "    counter log group 7 drop\n"
         "  }\n"
         "  chain capture {\n"
         "    type nat hook prerouting priority -100; policy accept;\n"
         "    iifname \"" + kTapName + "\" meta l4proto { tcp, udp } th dport 53 redirect to :53\n"
         "    iifname \"" + kTapName + "\" meta l4proto tcp redirect to :" +
         std::to_string(proxy_port) + "\n"
         "  }\n"
         "  chain only_proxy {\n"
         "    type filter hook input priority 0; policy drop;\n"
         "    iifname \"lo\" accept\n"
         "    ct status dnat accept\n"
         // the proxy itself, asked explicitly (HTTP_PROXY): a redirect to
         // where the packet already goes changes nothing, so no dnat status
         "    iifname \"" + kTapName + "\" ip daddr " + wire::kHostAddr + " tcp dport { " +
         std::to_string(proxy_port) + ", 53 } accept\n"
         "    iifname \"" + kTapName + "\" ip daddr " + wire::kHostAddr + " udp dport 53 accept\n"
         "    counter log group 7 drop\n"
         "  }\n"
         "}\n";
}

bool installRules(const std::string& rules, std::string* why) {
  nft_ctx* nft = nft_ctx_new(NFT_CTX_DEFAULT);
  if (nft == nullptr) {
    *why = "nftables context";
    errno = ENOMEM;
    return false;
  }
  nft_ctx_buffer_error(nft);
  int rc = nft_run_cmd_from_buffer(nft, rules.c_str());
  if (rc != 0) {
    const char* err = nft_ctx_get_error_buffer(nft);
    *why = std::string("nftables: ") + (err != nullptr ? err : "rejected the rules");
    while (!why->empty() && why->back() == '\n') {
      why->pop_back();
    }
  }
  nft_ctx_free(nft);
  if (rc != 0) {
    errno = EPERM;
    return false;
  }
  return true;
}

// nflogSocket subscribes to NFLOG group 7, where the rules send every
// dropped packet (its first 128 bytes), so the proxy can audit them.
int nflogSocket() {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER);
  if (s < 0) {
    return -1;
  }
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (bind(s, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    close(s);
    return -1;
  }
  struct {
    nlmsghdr nh;
    nfgenmsg nf;
    nlattr cmd_attr;
    nfulnl_msg_config_cmd cmd;
    uint8_t pad1[3];
    nlattr mode_attr;
    nfulnl_msg_config_mode mode;
    uint8_t pad2[2];
    nlattr qthresh_attr;
    uint32_t qthresh;  // deliver each packet at once, not after the 1 s flush timer
  } req{};
  req.nh.nlmsg_len = sizeof(req);
  req.nh.nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
  req.nh.nlmsg_flags = NLM_F_REQUEST;
  req.nf.nfgen_family = AF_UNSPEC;
  req.nf.version = NFNETLINK_V0;
  req.nf.res_id = htons(7);
  req.cmd_attr.nla_len = NLA_HDRLEN + sizeof(req.cmd);
  req.cmd_attr.nla_type = NFULA_CFG_CMD;
  req.cmd.command = NFULNL_CFG_CMD_BIND;
  req.mode_attr.nla_len = NLA_HDRLEN + sizeof(req.mode);
  req.mode_attr.nla_type = NFULA_CFG_MODE;
  req.mode.copy_range = htonl(128);
  req.mode.copy_mode = NFULNL_COPY_PACKET;
  req.qthresh_attr.nla_len = NLA_HDRLEN + sizeof(req.qthresh);
  req.qthresh_attr.nla_type = NFULA_CFG_QTHRESH;
  req.qthresh = htonl(1);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(s, &req, sizeof(req), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
    close(s);
    return -1;
  }
  return s;
}

int listener(int family, int type, uint16_t port, bool any = false) {
  int s = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) {
    return -1;
  }
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (family == AF_INET) {
    auto& a = reinterpret_cast<sockaddr_in&>(ss);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(any ? INADDR_ANY : INADDR_LOOPBACK);
    len = sizeof(a);
  } else {
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    auto& a = reinterpret_cast<sockaddr_in6&>(ss);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    a.sin6_addr = in6addr_loopback;
    len = sizeof(a);
  }
  if (bind(s, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      (type == SOCK_STREAM && listen(s, 4096) != 0)) {
    int e = errno;
    close(s);
    errno = e;
    return -1;
  }
  return s;
}

}  // namespace

// handOver creates the proxy's listeners (IPv4 on ANY or loopback, IPv6
// loopback when V6) and the MCP supervisor's socket, and sends them with the
// NFLOG socket to the proxy over NET_FD.
static bool handOver(int net_fd, uint16_t proxy_port, bool v6, bool any, std::string* what) {
  std::vector<int> fds;
  std::string kinds;
  struct Want {
    int family;
    int type;
    uint16_t port;
    char kind;
  };
  for (Want w : {Want{AF_INET, SOCK_STREAM, proxy_port, 'T'}, Want{AF_INET6, SOCK_STREAM, proxy_port, 'T'},
                 Want{AF_INET, SOCK_DGRAM, 53, 'U'}, Want{AF_INET6, SOCK_DGRAM, 53, 'U'},
                 Want{AF_INET, SOCK_STREAM, 53, 'D'}, Want{AF_INET6, SOCK_STREAM, 53, 'D'}}) {
    if (w.family == AF_INET6 && !v6) {
      continue;
    }
    int s = listener(w.family, w.type, w.port, any);
    if (s < 0) {
      *what = std::string("listen on ") + (w.family == AF_INET ? (any ? "0.0.0.0" : "127.0.0.1") : "[::1]") + ":" +
              std::to_string(w.port);
      int e = errno;
      for (int fd : fds) {
        close(fd);
      }
      errno = e;
      return false;
    }
    fds.push_back(s);
    kinds += w.kind;
  }
  // The MCP supervisor's socket (policy/wire.h): abstract names belong to
  // the network namespace, so only the session's processes can reach it,
  // and it is bound before the agent could take the name.
  int mcp = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sun;
  socklen_t sun_len = guard_wire_address(&sun);
  if (mcp < 0 || bind(mcp, reinterpret_cast<sockaddr*>(&sun), sun_len) != 0 ||
      listen(mcp, 128) != 0) {
    *what = "listen on the MCP supervisor's socket";
    int e = errno;
    for (int fd : fds) {
      close(fd);
    }
    if (mcp >= 0) {
      close(mcp);
    }
    errno = e;
    return false;
  }
  fds.push_back(mcp);
  kinds += 'M';
  // Dropped packets are audited when the kernel offers NFLOG here; the
  // drop itself never depends on it.
  if (int log = nflogSocket(); log >= 0) {
    fds.push_back(log);
    kinds += 'L';
  }
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
  iovec iov{kinds.data(), kinds.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
  ssize_t n = sendmsg(net_fd, &msg, MSG_NOSIGNAL);
  int e = errno;
  for (int fd : fds) {
    close(fd);
  }
  if (n != static_cast<ssize_t>(kinds.size())) {
    *what = "hand the listeners to the proxy";
    errno = n < 0 ? e : EPIPE;
    return false;
  }
  return true;
}

bool installHostRules(uint16_t proxy_port, std::string* what) {
  std::vector<uint8_t> batch = hostRules(proxy_port);
  // Every message but the batch's begin and end asks for an acknowledgement.
  int num_acked = 0;
  for (size_t at = 0; at + sizeof(nlmsghdr) <= batch.size();) {
    const auto* nh = reinterpret_cast<const nlmsghdr*>(batch.data() + at);
    num_acked += (nh->nlmsg_flags & NLM_F_ACK) != 0 ? 1 : 0;
    at += NLMSG_ALIGN(nh->nlmsg_len);
  }
  if (!sendBatch(batch, num_acked)) {
    int e = errno;
    *what = std::string("nftables: the kernel refused the rules (") + strerror(e) + ")";
    errno = e;
    return false;
  }
  return true;
}

bool setupNetwork(int net_fd, uint16_t proxy_port, std::string* what) {
  if (!addLocalDefault(AF_INET)) {
    *what = "route IPv4 to loopback";
    return false;
  }
  // IPv6 may be off in this kernel; then only IPv4 exists and nothing else
  // needs capturing.
  bool v6 = addLocalDefault(AF_INET6);
  if (!installHostRules(proxy_port, what)) {
    return false;
  }
  return handOver(net_fd, proxy_port, v6, false, what);
}

int setupVmNetwork(int net_fd, uint16_t proxy_port, std::string* what) {
  if (!interfaceUp("lo", nullptr)) {
    *what = "bring up lo";
    return -1;
  }
  int tun = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  struct ifreq ifr {};
  strncpy(ifr.ifr_name, kTapName, IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (tun < 0 || ioctl(tun, TUNSETIFF, &ifr) != 0) {
    *what = "create the tap device (/dev/net/tun)";
    int e = errno;
    if (tun >= 0) {
      close(tun);
    }
    errno = e;
    return -1;
  }
  if (!interfaceUp(kTapName, wire::kHostAddr) || !installRules(vmRules(proxy_port), what) ||
      !handOver(net_fd, proxy_port, false, true, what)) {
    if (what->empty()) {
      *what = "configure the tap device";
    }
    int e = errno;
    close(tun);
    errno = e;
    return -1;
  }
  return tun;
}

}  // namespace guard::vmhost
