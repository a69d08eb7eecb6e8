#!/usr/bin/env python3
"""Origin web servers for the proxy tests: one unprivileged-capable nginx on loopback.

    tests/net/origin.py start DIR --pki PKIDIR --site NAME=ADDR[,ADDR...] ... [options]
    tests/net/origin.py run   DIR ...same options...   (foreground; see below)
    tests/net/origin.py stop  DIR

One server block per --site NAME, listening on each of its ADDRs (loopback
only: 127.0.0.0/8 or ::1; anything else is refused) for HTTPS on the HTTPS
port and plain HTTP on the HTTP port. Every site shares the two ports, so
the sites need distinct addresses. The certificate is PKIDIR/NAME.pem with
PKIDIR/NAME.key (tests/net/pki.sh makes them); server_name NAME, so SNI
picks the block when sites share an address.

Endpoints of every site:
    /          "NAME\\n" (text/plain)
    /1k        exactly 1024 bytes
    /big       64 MiB (--big-mib), a position-stamped pattern; its SHA-256
               is in DIR/big.sha256
    /echo      text/plain body with the request's Authorization, X-Api-Key
               and X-Token header values and the request URI, one per line:
               "authorization=...\\nx-api-key=...\\nx-token=...\\nuri=...\\n"
    /repo.git  a git repository served as "dumb HTTP"; DIR/repo.head holds
               the commit id of its only branch, main
Keep-alive is on (keepalive_requests 1000000), worker_processes 1,
worker_connections 8192. Each site logs to DIR/NAME.access.log, one line per
request, written when the request ends:
    time site=NAME host="$host" http_host="Host header" sni="..." method=GET
    uri="/echo?x" status=200 bytes=N authorization="..." x_api_key="..."
    x_token="..." remote=ADDR:PORT server=ADDR:PORT proto=HTTP/1.1 tls=TLSv1.3
(one line; quotes and bytes outside printable ASCII escaped as \\xHH).

Options: --https-port N / --http-port N (default 0: a free port, chosen by
binding port 0 and checking it is free on every address; start retries with
new ports if nginx then loses the race), --http2 (offer h2 by ALPN on the
HTTPS listeners), --big-mib N.

start: writes DIR/nginx.conf and the content, starts nginx as a daemon
(pid file DIR/nginx.pid), returns once every listener accepts, and prints
"https=PORT http=PORT". The same two lines go to DIR/origin.ports.
run: the same, but nginx runs in the foreground as this script's child
(dying with it, by PR_SET_PDEATHSIG); the script prints the ports, then
waits; SIGTERM or SIGINT stops nginx and ends the script. Test fixtures use
this so a crashed test leaves no nginx behind.
stop: stops the nginx whose pid is in DIR/nginx.pid (SIGQUIT, then SIGTERM,
then SIGKILL) and waits until it is gone. Stops nothing else.

Everything nginx writes lives under DIR: config, pid, error log
(DIR/nginx.error.log), temp paths (DIR/nginx-tmp), content (DIR/www).
Runs as root (workers then run as nobody:nogroup, so DIR becomes mode 0755;
keys stay 0600 and are read by the master) or as an ordinary user.
Exit status: 0 success, 1 failure (reason on stderr), 2 usage.
"""

import argparse
import ctypes
import hashlib
import ipaddress
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
READY_TIMEOUT_S = 10.0


def die(msg):
    print("origin.py: " + msg, file=sys.stderr)
    sys.exit(1)


def find_nginx():
    for c in NGINX_CANDIDATES:
        p = shutil.which(c) if "/" not in c else (c if os.access(c, os.X_OK) else None)
        if p:
            return p
    die("nginx not found (install the Debian package nginx)")
    return None


def loopback(addr):
    """loopback returns ADDR normalised, or exits if it is not a loopback address."""
    try:
        ip = ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        die("not an IP address: %r" % addr)
    if not ip.is_loopback:
        die("refusing non-loopback address %s" % addr)
    return str(ip)


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def listen_addr(addr, port):
    return "[%s]:%d" % (addr, port) if ":" in addr else "%s:%d" % (addr, port)


def port_free(addrs, port):
    for a in addrs:
        s = socket.socket(family(a), socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((a, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pick_port(addrs, avoid):
    for _ in range(100):
        s = socket.socket(family(addrs[0]), socket.SOCK_STREAM)
        s.bind((addrs[0], 0))
        port = s.getsockname()[1]
        s.close()
        if port not in avoid and port_free(addrs, port):
            return port
    die("no free port on %s" % ",".join(addrs))
    return 0


def write_big(path, mib):
    """write_big fills PATH with MIB MiB: each 4 KiB block starts with its offset."""
    base = hashlib.sha256(b"guard origin /big").digest() * 128  # 4 KiB
    h = hashlib.sha256()
    with open(path, "wb") as f:
        chunk = bytearray()
        for i in range(mib * 256):
            stamp = b"%016x" % (i * 4096)
            block = stamp + base[len(stamp):]
            chunk += block
            if len(chunk) >= 1 << 20:
                f.write(chunk)
                h.update(chunk)
                chunk = bytearray()
        f.write(chunk)
        h.update(chunk)
    return h.hexdigest()


def make_repo(repo, head_file):
    """make_repo creates a bare repository REPO with one fixed commit, ready for dumb HTTP."""
    env = dict(os.environ)
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": os.path.dirname(repo),
        "GIT_AUTHOR_NAME": "guard tests", "GIT_AUTHOR_EMAIL": "tests@guard.test",
        "GIT_COMMITTER_NAME": "guard tests", "GIT_COMMITTER_EMAIL": "tests@guard.test",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    })

    def git(*args, stdin=None):
        r = subprocess.run(["git", "-C", repo] + list(args), input=stdin, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            die("git %s: %s" % (" ".join(args), r.stderr.strip()))
        return r.stdout.strip()

    os.makedirs(repo)
    git("init", "-q", "--bare", "-b", "main")
    blob = git("hash-object", "-w", "--stdin", stdin="guard test repository\n")
    tree = git("mktree", stdin="100644 blob %s\tREADME\n" % blob)
    commit = git("commit-tree", tree, "-m", "initial commit")
    git("update-ref", "refs/heads/main", commit)
    git("update-server-info")
    with open(head_file, "w") as f:
        f.write(commit + "\n")


def nginx_conf(d, sites, pki, https_port, http_port, http2):
    q = lambda p: '"%s"' % p
    lines = [
        "# Generated by tests/net/origin.py; everything lives under this directory.",
        "worker_processes 1;",
        "worker_rlimit_nofile %d;" % raise_nofile(),
        "pid %s;" % q(os.path.join(d, "nginx.pid")),
        "error_log %s warn;" % q(os.path.join(d, "nginx.error.log")),
        "events { worker_connections 8192; }",
        "http {",
    ]
    if os.geteuid() == 0:
        lines.insert(1, "user nobody nogroup;")
    tmp = os.path.join(d, "nginx-tmp")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        lines.append("  %s_temp_path %s;" % (kind, q(os.path.join(tmp, kind))))
    lines += [
        "  default_type application/octet-stream;",
        "  types { text/plain txt; }",
        "  sendfile on;",
        "  tcp_nopush on;",
        "  keepalive_timeout 75s;",
        "  keepalive_requests 1000000;",
        "  server_tokens off;",
        "  ssl_protocols TLSv1.2 TLSv1.3;",
        "  ssl_session_cache shared:guard_origin:1m;",
        "  access_log off;",
        "  log_format guard '$time_iso8601 site=$server_name host=\"$host\" "
        "http_host=\"$http_host\" sni=\"$ssl_server_name\" method=$request_method "
        "uri=\"$request_uri\" status=$status bytes=$body_bytes_sent "
        "authorization=\"$http_authorization\" x_api_key=\"$http_x_api_key\" "
        "x_token=\"$http_x_token\" remote=$remote_addr:$remote_port "
        "server=$server_addr:$server_port proto=$server_protocol tls=$ssl_protocol cipher=$ssl_cipher';",
    ]
    www = os.path.join(d, "www")
    h2 = " http2" if http2 else ""
    for name, addrs in sites:
        lines.append("  server {")
        for a in addrs:
            lines.append("    listen %s ssl%s;" % (listen_addr(a, https_port), h2))
            lines.append("    listen %s;" % listen_addr(a, http_port))
        lines += [
            "    server_name %s;" % name,
            "    ssl_certificate %s;" % q(os.path.join(pki, name + ".pem")),
            "    ssl_certificate_key %s;" % q(os.path.join(pki, name + ".key")),
            "    access_log %s guard;" % q(os.path.join(d, name + ".access.log")),
            "    root %s;" % q(www),
            "    location = / { default_type text/plain; return 200 \"%s\\n\"; }" % name,
            "    location = /echo { default_type text/plain; return 200 "
            "\"authorization=$http_authorization\\nx-api-key=$http_x_api_key\\n"
            "x-token=$http_x_token\\nuri=$request_uri\\n\"; }",
            "    location = /1k { }",
            "    location = /big { }",
            "    location /repo.git/ { }",
            # The same files at 32 KiB/s, for transfers that outlast a timeout.
            "    location /slow/ { alias %s; limit_rate 32k; }" % q(www + "/"),
            # PUT stores the body as www/uploads/NAME: what a request body
            # delivered, read from the host (TestNet::uploads).
            "    location /uploads/ { dav_methods PUT; create_full_put_path on; "
            "client_max_body_size 16m; }",
            "    location / { return 404; }",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def prepare(args):
    d = os.path.abspath(args.dir)
    pki = os.path.abspath(args.pki)
    sites = []
    used = set()
    for s in args.site:
        if "=" not in s:
            die("--site wants NAME=ADDR[,ADDR...], got %r" % s)
        name, addrs = s.split("=", 1)
        addrs = [loopback(a) for a in addrs.split(",") if a]
        if not name or not addrs:
            die("--site wants NAME=ADDR[,ADDR...], got %r" % s)
        for a in addrs:
            if a in used:
                die("address %s given to two sites" % a)
            used.add(a)
        for ext in (".pem", ".key"):
            if not os.path.exists(os.path.join(pki, name + ext)):
                die("missing %s (run tests/net/pki.sh %s %s)" % (name + ext, pki, name))
        sites.append((name, addrs))
    if not sites:
        die("no --site given")
    os.makedirs(d, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(d, 0o755)  # workers run as nobody and must reach DIR/www
        parent = os.path.dirname(d)
        while parent != "/":
            if os.stat(parent).st_mode & 0o001 == 0:
                die("%s is not searchable by others; nginx workers (nobody) could not "
                    "read %s/www" % (parent, d))
            parent = os.path.dirname(parent)
    www = os.path.join(d, "www")
    if not os.path.exists(os.path.join(www, "big")):
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "1k"), "wb") as f:
            f.write((b"0123456789abcdef" * 63) + b"guard origin 1k\n")
        digest = write_big(os.path.join(www, "big.tmp"), args.big_mib)
        with open(os.path.join(d, "big.sha256"), "w") as f:
            f.write(digest + "\n")
        make_repo(os.path.join(www, "repo.git"), os.path.join(d, "repo.head"))
        os.rename(os.path.join(www, "big.tmp"), os.path.join(www, "big"))
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(d, "nginx-tmp", kind), exist_ok=True)
    uploads = os.path.join(www, "uploads")
    os.makedirs(uploads, exist_ok=True)
    os.chmod(uploads, 0o777)  # the workers (nobody, as root) write there
    return d, pki, sites


def wait_accepting(sites, ports, alive):
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = [(a, p) for _, addrs in sites for a in addrs for p in ports]
    while pending:
        a, p = pending[0]
        s = socket.socket(family(a), socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect((a, p))
            pending.pop(0)
        except OSError:
            if not alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        finally:
            s.close()
    return True


def raise_nofile():
    """raise_nofile lifts this process's soft RLIMIT_NOFILE (inherited by nginx) and returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return min(soft, 65536)


def set_pdeathsig():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def start(args, foreground):
    if foreground:
        set_pdeathsig()  # "run" ends with its parent, and nginx with it
    d, pki, sites = prepare(args)
    nginx = find_nginx()
    all_addrs = [a for _, addrs in sites for a in addrs]
    conf = os.path.join(d, "nginx.conf")
    errlog = os.path.join(d, "nginx.error.log")
    for attempt in range(5):
        https_port = args.https_port or pick_port(all_addrs, set())
        http_port = args.http_port or pick_port(all_addrs, {https_port})
        with open(conf, "w") as f:
            f.write(nginx_conf(d, sites, pki, https_port, http_port, args.http2))
        cmd = [nginx, "-p", d + "/", "-c", conf, "-e", errlog]
        with open(os.path.join(d, "nginx.out"), "ab") as out:
            if foreground:
                proc = subprocess.Popen(cmd + ["-g", "daemon off;"], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=out, preexec_fn=set_pdeathsig)
                alive = lambda: proc.poll() is None
            else:
                rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
                proc = None
                alive = lambda: rc == 0 and pid_alive(read_pid(d))
        if wait_accepting(sites, (https_port, http_port), alive):
            break
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait()
        else:
            stop_pidfile(d)
        log = open(errlog, errors="replace").read() if os.path.exists(errlog) else ""
        if "Address already in use" not in log or args.https_port or args.http_port:
            die("nginx did not start; %s says:\n%s" % (errlog, log[-2000:]))
    else:
        die("nginx lost the race for free ports five times")
    text = "https=%d\nhttp=%d\n" % (https_port, http_port)
    with open(os.path.join(d, "origin.ports.tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(d, "origin.ports.tmp"), os.path.join(d, "origin.ports"))
    sys.stdout.write(text)
    sys.stdout.flush()
    if not foreground:
        return 0

    # The handlers only signal nginx; the one waitpid below sees it exit.
    stopping = []

    def on_signal(_sig, _frame):
        if not stopping:
            stopping.append(True)
            proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            signal.alarm(5)

    def on_alarm(_sig, _frame):
        proc.kill()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    rc = proc.wait()
    if stopping:
        return 0
    die("nginx exited with status %d; see %s" % (rc, errlog))
    return 1


def read_pid(d):
    try:
        with open(os.path.join(d, "nginx.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def pid_alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_our_nginx(pid, d):
    """is_our_nginx checks PID is an nginx started with prefix D, before any signal is sent."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()  # nginx rewrites it to one "nginx: master process ..." string
    except OSError:
        return False
    return b"nginx" in cmdline and (d + "/ ").encode() in cmdline.replace(b"\0", b" ")


def stop_pidfile(d):
    pid = read_pid(d)
    if pid <= 0 or not pid_alive(pid):
        return 0
    if not is_our_nginx(pid, d):
        die("pid %d in %s/nginx.pid is not this directory's nginx; not touching it" % (pid, d))
    for sig, wait_s in ((signal.SIGQUIT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return 0
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not pid_alive(pid) or not is_our_nginx(pid, d):
                return 0
            time.sleep(0.02)
    die("nginx pid %d did not exit" % pid)
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("start", "run", "stop"))
    ap.add_argument("dir")
    ap.add_argument("--pki", help="directory with NAME.pem and NAME.key per site")
    ap.add_argument("--site", action="append", default=[], help="NAME=ADDR[,ADDR...]")
    ap.add_argument("--https-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--http2", action="store_true")
    ap.add_argument("--big-mib", type=int, default=64)
    args = ap.parse_args()
    if args.command == "stop":
        return stop_pidfile(os.path.abspath(args.dir))
    if not args.pki:
        ap.error("--pki is required")
    os.umask(0o022)
    return start(args, foreground=(args.command == "run"))


if __name__ == "__main__":
    sys.exit(main())
