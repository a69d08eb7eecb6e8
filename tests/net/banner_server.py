#!/usr/bin/env python3
"""banner_server.py: a server-first TCP origin for the network tests.

It listens on one port on every --listen address (loopback only), and for each
accepted connection appends one line "accept PEER" to --log, sends --banner
followed by CRLF, reads what the client sends within two seconds (logged as
"recv N BYTES-REPR") and closes. The port is written to --port-file (with a
newline) once every address listens. It speaks first, so a proxy must relay
the banner before the client has sent a byte.

    banner_server.py --listen 127.0.0.2 [--listen ::1] --banner TEXT \
        --log FILE --port-file FILE
"""

import argparse
import ipaddress
import os
import socket
import sys
import threading


def die(msg):
    print("banner_server.py: " + msg, file=sys.stderr)
    sys.exit(1)


def listen(addrs):
    """listen binds one port on every address of ADDRS and returns (sockets, port)."""
    socks = []
    port = 0
    for a in addrs:
        ip = ipaddress.ip_address(a)
        if not ip.is_loopback:
            die("refusing non-loopback address " + a)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((a, port))
        except OSError as e:
            die("bind %s port %d: %s" % (a, port, e))
        s.listen(64)
        port = s.getsockname()[1]
        socks.append(s)
    return socks, port


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", action="append", required=True)
    p.add_argument("--banner", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--port-file", required=True)
    args = p.parse_args()

    socks, port = listen(args.listen)
    lock = threading.Lock()
    open(args.log, "a").close()

    def log(line):
        with lock, open(args.log, "a") as f:
            f.write(line + "\n")

    def serve(conn, peer):
        with conn:
            log("accept %s" % (peer[0],))
            try:
                conn.sendall(args.banner.encode() + b"\r\n")
                conn.settimeout(2.0)
                data = conn.recv(4096)
                log("recv %d %r" % (len(data), data))
            except OSError as e:
                log("error %s" % e)

    def accept_loop(s):
        while True:
            conn, peer = s.accept()
            threading.Thread(target=serve, args=(conn, peer), daemon=True).start()

    for s in socks:
        threading.Thread(target=accept_loop, args=(s,), daemon=True).start()
    with open(args.port_file + ".tmp", "w") as f:
        f.write("%d\n" % port)
    os.rename(args.port_file + ".tmp", args.port_file)
    threading.Event().wait()


if __name__ == "__main__":
    main()
