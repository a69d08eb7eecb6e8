#!/usr/bin/env python3
"""connect_tunnel.py: an ssh ProxyCommand that goes through an HTTP proxy.

    connect_tunnel.py HOST PORT

It opens a CONNECT tunnel to HOST:PORT through $https_proxy (or
$HTTPS_PROXY; http://ADDR:PORT) and relays stdin and stdout over it until
either side closes. A refused CONNECT (any status but 2xx) ends it with exit
status 1 and the proxy's status line on stderr: the tests use it to reach a
name through guard's explicit proxy rather than its transparent capture.
"""

import os
import selectors
import socket
import sys
import urllib.parse


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: connect_tunnel.py HOST PORT")
    host, port = sys.argv[1], sys.argv[2]
    proxy = os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY")
    if not proxy:
        sys.exit("connect_tunnel.py: no https_proxy in the environment")
    u = urllib.parse.urlsplit(proxy)
    s = socket.create_connection((u.hostname, u.port or 80), 10)
    target = "%s:%s" % (host, port)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            sys.exit("connect_tunnel.py: the proxy closed before answering")
        head += b
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status.split()
    if len(parts) < 2 or not parts[1].startswith("2"):
        sys.exit("connect_tunnel.py: CONNECT %s refused: %s" % (target, status))
    s.settimeout(None)

    sel = selectors.DefaultSelector()
    try:
        sel.register(sys.stdin.buffer.raw, selectors.EVENT_READ, "in")
    except (OSError, ValueError):
        s.shutdown(socket.SHUT_WR)  # stdin cannot be polled (/dev/null): no input
    sel.register(s, selectors.EVENT_READ, "net")
    out = sys.stdout.buffer.raw
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(key.fileobj.fileno(), 65536)
                if not data:
                    s.shutdown(socket.SHUT_WR)
                    sel.unregister(key.fileobj)
                    continue
                s.sendall(data)
            else:
                data = s.recv(65536)
                if not data:
                    return
                while data:
                    n = out.write(data)
                    data = data[n:]


if __name__ == "__main__":
    main()
