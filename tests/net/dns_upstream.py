#!/usr/bin/env python3
"""A scripted DNS server on loopback: the upstream resolver of the proxy tests.

    tests/net/dns_upstream.py --listen 127.0.0.1:PORT [--listen [::1]:PORT]
        --map NAME=ADDR[,ADDR...] ... [--cname ALIAS=TARGET ...]
        [--servfail NAME ...] [--drop NAME ...] [--ttl N]
        --log FILE [--port-file FILE]

Stdlib only. Serves UDP and TCP (RFC 1035 4.2.2 length prefix, several
queries per connection) on each --listen address, which must be loopback.
PORT 0 picks a free port (the same for UDP and TCP, and for every --listen
after the first one that gives 0).

Answers (authoritative, RD copied, RA set, question echoed):
  --map NAME=ADDR,...   A records for its IPv4 ADDRs, AAAA for its IPv6 ones;
                        a mapped name asked for a type it lacks gets NOERROR
                        with no answer (NODATA).
  --cname ALIAS=TARGET  ALIAS answers with the CNAME, followed by TARGET's
                        records of the asked type (chains of up to 8 links).
  --servfail NAME       SERVFAIL.
  --drop NAME           no answer at all (for timeout tests).
  anything else         NXDOMAIN.
Names match case-insensitively; a trailing dot is optional. Malformed
packets are dropped (and logged as "- malformed").

Every received query appends one line to --log, flushed at once:
    QNAME QTYPE PROTO      e.g. "allowed.test A udp"
QNAME lowercased without the trailing dot, QTYPE a mnemonic (A, AAAA,
CNAME, MX, TXT, ANY, ...) or TYPEn, PROTO udp or tcp.

Ready signal: once every socket is bound, the port is written to
--port-file (atomically, by rename) and "ready PORT" is printed to stdout.
Runs until SIGTERM or SIGINT. Exit status 0 after a signal, 1 on setup
errors, 2 on usage errors.
"""

import argparse
import ipaddress
import os
import signal
import socket
import socketserver
import struct
import sys
import threading

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 41: "OPT", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
T_A, T_CNAME, T_AAAA = 1, 5, 28
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 1, 2, 3
MAX_CHAIN = 8


class Zone:
    def __init__(self, args):
        self.addrs = {}    # name -> [ip_address]
        self.cnames = {}   # alias -> target
        self.servfail = {norm(n) for n in args.servfail}
        self.drop = {norm(n) for n in args.drop}
        self.ttl = args.ttl
        for m in args.map:
            name, _, vals = m.partition("=")
            if not name or not vals:
                usage("--map wants NAME=ADDR[,ADDR...], got %r" % m)
            try:
                ips = [ipaddress.ip_address(v.strip("[]")) for v in vals.split(",") if v]
            except ValueError as e:
                usage(str(e))
            self.addrs.setdefault(norm(name), []).extend(ips)
        for c in args.cname:
            alias, _, target = c.partition("=")
            if not alias or not target:
                usage("--cname wants ALIAS=TARGET, got %r" % c)
            self.cnames[norm(alias)] = norm(target)

    def answer(self, qname, qtype):
        """answer returns (rcode, [(owner, type, rdata)]) or None to stay silent."""
        name = qname
        if name in self.drop:
            return None
        if name in self.servfail:
            return RCODE_SERVFAIL, []
        records = []
        for _ in range(MAX_CHAIN + 1):
            if name in self.cnames:
                target = self.cnames[name]
                records.append((name, T_CNAME, encode_name(target)))
                if qtype == T_CNAME:
                    return RCODE_NOERROR, records
                name = target
                continue
            if name not in self.addrs:
                # A dangling CNAME keeps its record; the target does not exist.
                return RCODE_NXDOMAIN, records
            for ip in self.addrs[name]:
                if qtype in (T_A, 255) and ip.version == 4:
                    records.append((name, T_A, ip.packed))
                if qtype in (T_AAAA, 255) and ip.version == 6:
                    records.append((name, T_AAAA, ip.packed))
            return RCODE_NOERROR, records
        return RCODE_SERVFAIL, []  # a CNAME loop


def norm(name):
    return name.lower().rstrip(".")


def usage(msg):
    print("dns_upstream.py: " + msg, file=sys.stderr)
    sys.exit(2)


def encode_name(name):
    out = b""
    for label in name.split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise ValueError("label too long")
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def parse_question(msg):
    """parse_question returns (id, flags, qname, qtype, qclass, end) or raises ValueError."""
    if len(msg) < 12:
        raise ValueError("short header")
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000 or qdcount < 1:
        raise ValueError("not a query")
    labels = []
    pos = 12
    total = 0
    while True:
        if pos >= len(msg):
            raise ValueError("truncated name")
        n = msg[pos]
        if n & 0xC0:
            raise ValueError("compression in question")  # queries never need it
        pos += 1
        if n == 0:
            break
        if pos + n > len(msg):
            raise ValueError("truncated label")
        labels.append(msg[pos:pos + n].decode("ascii", "replace"))
        total += n + 1
        if total > 255:
            raise ValueError("name too long")
        pos += n
    if pos + 4 > len(msg):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return qid, flags, ".".join(labels), qtype, qclass, pos + 4


class Server:
    def __init__(self, zone, log_path):
        self.zone = zone
        self.log = open(log_path, "a", buffering=1)
        self.lock = threading.Lock()

    def note(self, line):
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()

    def handle(self, msg, proto, max_len=65535):
        """handle returns the reply bytes for MSG (at most MAX_LEN), or None for no reply."""
        try:
            qid, flags, qname, qtype, qclass, end = parse_question(msg)
        except ValueError:
            self.note("- malformed %s" % proto)
            return None
        name = norm(qname)
        self.note("%s %s %s" % (name or ".", QTYPES.get(qtype, "TYPE%d" % qtype), proto))
        opcode = (flags >> 11) & 0xF
        rd = flags & 0x0100
        if opcode != 0 or qclass not in (1, 255):
            result = (RCODE_FORMERR if qclass not in (1, 255) else 4, [])  # 4: NOTIMP
        else:
            result = self.zone.answer(name, qtype)
        if result is None:
            return None
        rcode, records = result
        out_flags = 0x8000 | (opcode << 11) | 0x0400 | rd | 0x0080 | rcode
        question = msg[12:end]  # as asked (case preserved)
        body = b""
        for owner, rtype, rdata in records:
            # The question name is at offset 12: point at it (RFC 1035 4.1.4).
            owner_bytes = b"\xc0\x0c" if owner == name else encode_name(owner)
            body += owner_bytes + struct.pack("!HHIH", rtype, 1, self.zone.ttl, len(rdata)) + rdata
        if 12 + len(question) + len(body) > max_len:
            # RFC 1035 4.2.1: too long for UDP; set TC so the client retries over TCP.
            return struct.pack("!HHHHHH", qid, out_flags | 0x0200, 1, 0, 0, 0) + question
        return struct.pack("!HHHHHH", qid, out_flags, 1, len(records), 0, 0) + question + body


def make_servers(server, listens):
    port = 0
    servers = []
    for spec in listens:
        host, _, p = spec.rpartition(":")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
            want = int(p)
        except ValueError:
            usage("--listen wants ADDR:PORT or [ADDR]:PORT, got %r" % spec)
        if not ip.is_loopback:
            usage("refusing non-loopback --listen %s" % spec)
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        want = want or port
        # With port 0 the kernel picks a UDP port that TCP may not have free: retry.
        for attempt in range(1 if want else 50):
            try:
                udp, tcp = bind_pair(server, fam, str(ip), want)
                break
            except OSError:
                if want or attempt == 49:
                    raise
        port = udp.server_address[1]
        servers += [udp, tcp]
    return port, servers


def bind_pair(server, fam, host, port):
    class Udp(socketserver.ThreadingUDPServer):
        address_family = fam
        daemon_threads = True

    class Tcp(socketserver.ThreadingTCPServer):
        address_family = fam
        daemon_threads = True
        allow_reuse_address = True

    class UdpHandler(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            reply = server.handle(data, "udp", max_len=512)
            if reply is not None:
                sock.sendto(reply, self.client_address)

    class TcpHandler(socketserver.BaseRequestHandler):
        def handle(self):
            conn = self.request
            conn.settimeout(30)
            try:
                while True:
                    hdr = recv_exact(conn, 2)
                    if hdr is None:
                        return
                    msg = recv_exact(conn, struct.unpack("!H", hdr)[0])
                    if msg is None:
                        return
                    reply = server.handle(msg, "tcp")
                    if reply is None:
                        continue
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    udp = Udp((host, port), UdpHandler)
    try:
        tcp = Tcp((host, udp.server_address[1]), TcpHandler)
    except OSError:
        udp.server_close()
        raise
    return udp, tcp


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", action="append", required=True)
    ap.add_argument("--map", action="append", default=[])
    ap.add_argument("--cname", action="append", default=[])
    ap.add_argument("--servfail", action="append", default=[])
    ap.add_argument("--drop", action="append", default=[])
    ap.add_argument("--ttl", type=int, default=60)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    zone = Zone(args)
    server = Server(zone, args.log)
    try:
        port, servers = make_servers(server, args.listen)
    except OSError as e:
        print("dns_upstream.py: %s" % e, file=sys.stderr)
        return 1
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    print("ready %d" % port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(3600):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
