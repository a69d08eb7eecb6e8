// Network namespace setup: routes (rtnetlink), nftables rules (libnftables),
// the proxy's listeners (handed over with SCM_RIGHTS).
#include "vmhost/netns.h"

#include <arpa/inet.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <nftables/libnftables.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
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

// hostRules: the agent's own namespace. The loopback of the namespace
// stays the agent's own (its dev servers, its tests); everything else is
// captured or dropped. Dropped packets go to NFLOG group 7 and a counter.
// With every address local, a flow's source is the address it was sent to,
// so the proxy's replies to a redirected flow leave for a non-loopback
// address: conntrack knows them.
std::string hostRules(uint16_t proxy_port) {
  return "table inet guard {\n"
         "  chain capture {\n"
         "    type nat hook output priority -100; policy accept;\n"
         "    meta l4proto { tcp, udp } th dport 53 redirect to :53\n"
         "    ip daddr 127.0.0.0/8 return\n"
         "    ip6 daddr ::1 return\n"
         "    meta l4proto tcp redirect to :" + std::to_string(proxy_port) + "\n"
         "  }\n"
         "  chain only_loopback {\n"
         "    type filter hook output priority 0; policy drop;\n"
         "    ip daddr 127.0.0.0/8 accept\n"
         "    ip6 daddr ::1 accept\n"
         "    ct status dnat accept\n"  // both directions of a redirected flow
         "    counter log group 7 drop\n"
         "  }\n"
         "}\n";
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

bool setupNetwork(int net_fd, uint16_t proxy_port, std::string* what) {
  if (!addLocalDefault(AF_INET)) {
    *what = "route IPv4 to loopback";
    return false;
  }
  // IPv6 may be off in this kernel; then only IPv4 exists and nothing else
  // needs capturing.
  bool v6 = addLocalDefault(AF_INET6);
  if (!installRules(hostRules(proxy_port), what)) {
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
