// The agent's network namespace: loopback only, every TCP connection
// redirected to the proxy, DNS to its responder, every other packet dropped.
#pragma once

#include <cstdint>
#include <string>

namespace guard::vmhost {

// setupNetwork runs inside the agent's new network namespace, with loopback
// up and the capabilities of the namespace's owner. It routes every address
// to loopback, installs the nftables table `inet guard` (TCP to PROXY_PORT,
// UDP and TCP port 53 to the DNS responder on port 53, everything not bound
// for loopback dropped), creates the listening sockets and sends them to the
// proxy over NET_FD (one SOCK_SEQPACKET message: one kind byte per
// descriptor, 'T' TCP listener, 'U' DNS over UDP, 'D' DNS over TCP, 'L' a
// netlink socket receiving the dropped packets from NFLOG group 7, 'M' the
// MCP supervisor's SOCK_SEQPACKET socket, policy/wire.h).
// Returns false with *WHAT naming the failed step and errno set.
bool setupNetwork(int net_fd, uint16_t proxy_port, std::string* what);

// VM mode: the guest's network is a tap device in a network namespace of
// QEMU's own, addressed as vm_wire.h says (wire::kHostAddr on the tap).
inline constexpr char kTapName[] = "guard0";

// setupVmNetwork runs inside QEMU's new network namespace: brings up lo,
// creates the tap device kTapName with wire::kHostAddr, installs the nftables
// table `inet guard` (TCP from the tap to PROXY_PORT, UDP and TCP port 53
// to the DNS responder, every other packet from the guest dropped and
// logged to NFLOG group 7, nothing but redirected flows accepted locally),
// and hands the listeners (on every address) to the proxy as setupNetwork
// does. Returns the tap's descriptor for QEMU, or -1 with *WHAT naming the
// failed step and errno set.
int setupVmNetwork(int net_fd, uint16_t proxy_port, std::string* what);

}  // namespace guard::vmhost
