#!/usr/bin/env python3
"""Summarises FUSE requests from `perf script` output of the kernel's
fuse:fuse_request_send / fuse:fuse_request_end tracepoints.

  perf record -e fuse:fuse_request_send -e fuse:fuse_request_end -a -o F -- CMD
  perf script -i F -F time,event,trace | fusestat.py [LABEL]

Only the busiest connection is counted (the session's view; other FUSE
mounts on the machine make few requests). Prints one Markdown row per
opcode: count, total and mean time from send to reply (the kernel's view of
the daemon's latency, queueing included).
"""
import collections
import re
import sys

SEND = re.compile(r"^\s*([\d.]+):\s+fuse:fuse_request_send:\s+connection (\d+) req (\d+) opcode \d+ \((\w+)\)")
END = re.compile(r"^\s*([\d.]+):\s+fuse:fuse_request_end:\s+connection (\d+) req (\d+) .*error (-?\d+)")


def main():
    label = sys.argv[1] if len(sys.argv) > 1 else ""
    pending = {}
    per_conn = collections.Counter()
    stats = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0, 0]))
    for line in sys.stdin:
        m = SEND.match(line)
        if m:
            t, conn, req, op = float(m.group(1)), m.group(2), m.group(3), m.group(4)
            pending[(conn, req)] = (t, op)
            per_conn[conn] += 1
            continue
        m = END.match(line)
        if m:
            t, conn, req, err = float(m.group(1)), m.group(2), m.group(3), int(m.group(4))
            start = pending.pop((conn, req), None)
            if start is None:
                continue
            s = stats[conn][start[1].replace("FUSE_", "").lower()]
            s[0] += 1
            s[1] += t - start[0]
            s[2] += 1 if err != 0 else 0
    # forgets get no reply: count what is left
    for (conn, _), (_, op) in pending.items():
        stats[conn][op.replace("FUSE_", "").lower()][0] += 1
    if not per_conn:
        print("| %s | (no FUSE requests) | | | | |" % label)
        return
    conn = per_conn.most_common(1)[0][0]
    ops = sorted(stats[conn].items(), key=lambda kv: -kv[1][1])
    total_n = sum(v[0] for _, v in ops)
    total_t = sum(v[1] for _, v in ops)
    for op, (n, secs, errs) in ops:
        mean = (secs / n * 1e6) if n else 0
        print("| %s | %s | %d | %.0f | %.0f | %d |" % (label, op, n, secs * 1e3, mean, errs))
    print("| %s | **total** | **%d** | **%.0f** | | |" % (label, total_n, total_t * 1e3))


if __name__ == "__main__":
    main()
