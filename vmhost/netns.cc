// Network namespace setup: routes (rtnetlink), nftables rules (one batch
// built with libnftnl, vmhost/nftables.h), the proxy's listeners (handed
// over with SCM_RIGHTS).
#include "vmhost/netns.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
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
#include "vmhost/nftables.h"
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

// installHostRules: the agent's own namespace. The loopback of the namespace
// stays the agent's own (its dev servers, its tests); everything else is
// captured or dropped. Dropped packets go to NFLOG group 7 and a counter.
// With every address local, a flow's source is the address it was sent to,
// so the proxy's replies to a redirected flow leave for a non-loopback
// address: conntrack knows them. In nft(8) syntax the table is as follows
// (tests/integration/nft_test.cc holds the same text and checks a live
// session's table against what `nft -f` makes of it):
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
//       ct status dnat accept   # both directions of a redirected flow
//       counter log group 7 drop
//     }
//   }
bool installHostRules(uint16_t proxy_port, std::string* why) {
  using nft::Rule;
  const in_addr_t loopback = htonl(INADDR_LOOPBACK);
  nft::Batch b("guard");
  b.chain("capture", "nat", NF_INET_LOCAL_OUT, -100, NF_ACCEPT);
  b.chain("only_loopback", "filter", NF_INET_LOCAL_OUT, 0, NF_DROP);
  nft::Set tcp_udp = b.l4protos({IPPROTO_TCP, IPPROTO_UDP});
  b.rule("capture", Rule().l4protoIn(tcp_udp).dport(53).redirect(53));
  b.rule("capture", Rule().ipDaddr(loopback, 8).ret());
  b.rule("capture", Rule().ip6Daddr(in6addr_loopback).ret());
  b.rule("capture", Rule().l4proto(IPPROTO_TCP).redirect(proxy_port));
  b.rule("only_loopback", Rule().ipDaddr(loopback, 8).accept());
  b.rule("only_loopback", Rule().ip6Daddr(in6addr_loopback).accept());
  b.rule("only_loopback", Rule().ctStatus(IPS_DST_NAT).accept());
  b.rule("only_loopback", Rule().counter().log(7).drop());
  return b.commit(why);
}

// installVmRules: the namespace QEMU runs in, where the guest's packets arrive on
// the tap device. Every TCP connection is redirected to the proxy, DNS to
// the responder (both listen on the tap's address); everything else the
// guest sends (other UDP, ICMP, IPv6) is dropped, audited through NFLOG.
// In nft(8) syntax (TAP is kTapName, HOST wire::kHostAddr; checked like
// host mode's by tests/integration/nft_test.cc):
//
//   table inet guard {
//     chain guest_only {
//       type filter hook prerouting priority -150; policy accept;
//       iifname != "TAP" accept
//       meta nfproto ipv4 meta l4proto tcp accept
//       meta nfproto ipv4 meta l4proto udp udp dport 53 accept
//       counter log group 7 drop
//     }
//     chain capture {
//       type nat hook prerouting priority -100; policy accept;
//       iifname "TAP" meta l4proto { tcp, udp } th dport 53 redirect to :53
//       iifname "TAP" meta l4proto tcp redirect to :PROXY_PORT
//     }
//     chain only_proxy {
//       type filter hook input priority 0; policy drop;
//       iifname "lo" accept
//       ct status dnat accept
//       # the proxy itself, asked explicitly (HTTP_PROXY): a redirect to
//       # where the packet already goes changes nothing, so no dnat status
//       iifname "TAP" ip daddr HOST tcp dport { PROXY_PORT, 53 } accept
//       iifname "TAP" ip daddr HOST udp dport 53 accept
//       counter log group 7 drop
//     }
//   }
bool installVmRules(uint16_t proxy_port, std::string* why) {
  using nft::Rule;
  in_addr host{};
  if (inet_pton(AF_INET, wire::kHostAddr, &host) != 1) {
    *why = "nftables: the tap's address";
    errno = EINVAL;
    return false;
  }
  nft::Batch b("guard");
  b.chain("guest_only", "filter", NF_INET_PRE_ROUTING, -150, NF_ACCEPT);
  b.chain("capture", "nat", NF_INET_PRE_ROUTING, -100, NF_ACCEPT);
  b.chain("only_proxy", "filter", NF_INET_LOCAL_IN, 0, NF_DROP);
  b.rule("guest_only", Rule().iifname(kTapName, false).accept());
  b.rule("guest_only", Rule().nfproto(NFPROTO_IPV4).l4proto(IPPROTO_TCP).accept());
  b.rule("guest_only", Rule().nfproto(NFPROTO_IPV4).l4proto(IPPROTO_UDP).dport(53).accept());
  b.rule("guest_only", Rule().counter().log(7).drop());
  nft::Set tcp_udp = b.l4protos({IPPROTO_TCP, IPPROTO_UDP});
  b.rule("capture", Rule().iifname(kTapName).l4protoIn(tcp_udp).dport(53).redirect(53));
  b.rule("capture", Rule().iifname(kTapName).l4proto(IPPROTO_TCP).redirect(proxy_port));
  b.rule("only_proxy", Rule().iifname("lo").accept());
  b.rule("only_proxy", Rule().ctStatus(IPS_DST_NAT).accept());
  nft::Set proxy_dns = b.ports({proxy_port, 53});
  b.rule("only_proxy",
         Rule().iifname(kTapName).ipDaddr(host.s_addr, 32).l4proto(IPPROTO_TCP).dportIn(proxy_dns).accept());
  b.rule("only_proxy", Rule().iifname(kTapName).ipDaddr(host.s_addr, 32).l4proto(IPPROTO_UDP).dport(53).accept());
  b.rule("only_proxy", Rule().counter().log(7).drop());
  return b.commit(why);
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
  // Persistent: QEMU's exit then leaves the tap to the namespace's own
  // teardown, which the kernel runs in the background once the proxy has
  // closed the listeners. Closing a non-persistent tap unregistered it in
  // QEMU's exit, whose rcu_barrier held up every session's end ~20 ms.
  if (tun < 0 || ioctl(tun, TUNSETIFF, &ifr) != 0 || ioctl(tun, TUNSETPERSIST, 1) != 0) {
    *what = "create the tap device (/dev/net/tun)";
    int e = errno;
    if (tun >= 0) {
      close(tun);
    }
    errno = e;
    return -1;
  }
  if (!interfaceUp(kTapName, wire::kHostAddr) || !installVmRules(proxy_port, what) ||
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
