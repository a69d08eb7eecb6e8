#!/usr/bin/env node
// A raw JSON-RPC-over-stdio driver for adversarial MCP tests: it sends exactly
// the bytes it is told to, in order, without waiting for replies and without
// any MCP handshake of its own.
//
//   node raw.mjs --wait MS [--line JSON]... [--file PATH]... [--bytes N]... -- CMD ARGS...
//
// It spawns CMD ARGS with stdin, stdout and stderr piped (environment and cwd
// inherited) and writes, in the order given on the command line:
//   --line TEXT   TEXT + "\n" (sent as is: it need not be valid JSON)
//   --file PATH   the file's lines, each + "\n" (blank lines skipped)
//   --bytes N     N bytes of 'x' with no newline (an oversized message)
// Then it keeps stdin open for MS milliseconds (default 1000), closes it, and
// waits for CMD to exit: at most 5 s, then SIGKILL. It returns early if CMD
// exits before the MS are up.
//
// It prints one JSON object on stdout and exits 0 (2 only on a usage error):
//   {"stdout_lines":[<each stdout line parsed as JSON, or {"raw":"line"}>],
//    "stderr":"...", "exit":<code or null>, "signal":<name or null>,
//    "killed":<true if raw.mjs had to SIGKILL it>,
//    "stdin_error":<"EPIPE..." if writing failed, else null>,
//    "spawn_error":<message if CMD could not be started, else null>}

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";

function usage(msg) {
  process.stderr.write(
    `raw.mjs: ${msg}\n` +
      "usage: node raw.mjs --wait MS [--line JSON]... [--file PATH]... [--bytes N]... -- CMD ARGS...\n",
  );
  process.exit(2);
}

const EXIT_GRACE_MS = 5000;
const STDERR_CAP = 1 << 20;

const argv = process.argv.slice(2);
let waitMs = 1000;
const chunks = []; // Buffers to write, in order
let cmd = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const next = () => {
    if (i + 1 >= argv.length) usage(`${a} needs a value`);
    return argv[++i];
  };
  if (a === "--") {
    cmd = argv.slice(i + 1);
    break;
  } else if (a === "--wait") {
    waitMs = Number(next());
    if (!(waitMs >= 0)) usage("--wait must be a number of ms >= 0");
  } else if (a === "--line") {
    chunks.push(Buffer.from(next() + "\n"));
  } else if (a === "--file") {
    const path = next();
    let text;
    try {
      text = readFileSync(path, "utf8");
    } catch (e) {
      usage(`--file ${path}: ${e.message}`);
    }
    for (const line of text.split("\n")) {
      if (line.trim() !== "") chunks.push(Buffer.from(line + "\n"));
    }
  } else if (a === "--bytes") {
    const n = Number(next());
    if (!Number.isInteger(n) || n < 0) usage("--bytes must be an integer >= 0");
    chunks.push(Buffer.alloc(n, "x"));
  } else {
    usage(`unknown argument ${a}`);
  }
}
if (cmd.length === 0) usage("needs -- CMD ARGS...");

const result = {
  stdout_lines: [],
  stderr: "",
  exit: null,
  signal: null,
  killed: false,
  stdin_error: null,
  spawn_error: null,
};

function finish() {
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
}

function parseLines(text) {
  const lines = text.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines.map((line) => {
    try {
      return JSON.parse(line);
    } catch {
      return { raw: line };
    }
  });
}

let child;
try {
  child = spawn(cmd[0], cmd.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
} catch (e) {
  result.spawn_error = String(e.message ?? e);
  finish();
}

if (child) {
  const out = [];
  let err = "";
  let spawnFailed = false;
  child.stdout.on("data", (d) => out.push(d));
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    if (err.length < STDERR_CAP) err += d;
  });
  child.stdin.on("error", (e) => {
    if (result.stdin_error === null) result.stdin_error = `${e.code ?? ""} ${e.message}`.trim();
  });

  // Resolves once the child has exited and its pipes have drained (a
  // grandchild holding the pipes open gets 500 ms more, no longer).
  const done = new Promise((resolve) => {
    let exited = false;
    let pending = 2;
    const maybe = () => {
      if (exited && pending === 0) resolve();
    };
    child.stdout.on("close", () => {
      pending--;
      maybe();
    });
    child.stderr.on("close", () => {
      pending--;
      maybe();
    });
    child.on("exit", (code, signal) => {
      exited = true;
      result.exit = code;
      result.signal = signal;
      setTimeout(resolve, 500);
      maybe();
    });
    child.on("error", (e) => {
      // spawn failure (ENOENT, EACCES...): no exit event follows
      if (child.pid === undefined) {
        spawnFailed = true;
        result.spawn_error = String(e.message ?? e);
        resolve();
      }
    });
  });

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  let exitedEarly = false;
  done.then(() => {
    exitedEarly = true;
  });

  for (const c of chunks) {
    if (child.stdin.destroyed) break;
    child.stdin.write(c);
  }
  await Promise.race([sleep(waitMs), done]);
  if (!exitedEarly && !spawnFailed) {
    try {
      child.stdin.end();
    } catch {
      // the error handler records it
    }
    const timedOut = await Promise.race([done.then(() => false), sleep(EXIT_GRACE_MS).then(() => true)]);
    if (timedOut) {
      result.killed = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // gone meanwhile
      }
      await Promise.race([done, sleep(2000)]);
    }
  }
  result.stdout_lines = parseLines(Buffer.concat(out).toString("utf8"));
  result.stderr = err;
  child.stdout.destroy();
  child.stderr.destroy();
  finish();
}
