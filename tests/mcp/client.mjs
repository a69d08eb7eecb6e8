#!/usr/bin/env node
// A real MCP client (the official TypeScript SDK's Client) for guard's MCP tests.
//
//   node client.mjs [--http URL | --sse URL | --stdio] [--ops JSON] [--timeout MS] [-- CMD ARGS...]
//
// --stdio (the default when a CMD follows "--") starts CMD ARGS with the SDK's
// StdioClientTransport: stdin/stdout are the MCP pipe, stderr is inherited,
// and the environment is this process's whole environment (the SDK alone
// would pass only HOME, PATH, USER and a few others).
// --http URL speaks Streamable HTTP (e.g. http://127.0.0.1:PORT/mcp);
// --sse URL speaks the deprecated HTTP+SSE transport (e.g. http://127.0.0.1:PORT/sse).
//
// --ops is a JSON array run in order after connecting (default [{"op":"list"}]):
//   {"op":"list"}                                 tools/list, following nextCursor
//   {"op":"call","name":"echo","args":{...}}      tools/call
//   {"op":"ping"}                                 ping
//
// It prints exactly one JSON object on stdout:
//   {"connect":{"ok":true} | {"ok":false,"code":..,"error":".."},
//    "results":[
//      {"op":"list","ok":true,"tools":["name",...],"pages":N},
//      {"op":"call","name":"..","ok":true,"isError":bool,"text":"text items concatenated"},
//      {"op":"ping","ok":true},
//      {"op":"..",("name":"..",)"ok":false,"code":<JSON-RPC error code or null>,"error":".."}]}
// When connecting fails every op is reported as {"ok":false,"code":null,"error":"not connected"}.
// "http_status" is added to a failure that came from an HTTP status.
// Each op (and connecting) times out after --timeout ms (default 10000).
// Exit status: 0 whenever the object was printed, however the ops went; 2 on a bug.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport, SseError } from "@modelcontextprotocol/sdk/client/sse.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";

function usage(msg) {
  process.stderr.write(
    `client.mjs: ${msg}\n` +
      "usage: node client.mjs [--http URL | --sse URL | --stdio] [--ops JSON] [--timeout MS] [-- CMD ARGS...]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { mode: null, url: null, ops: [{ op: "list" }], timeout: 10000, cmd: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--") {
      opts.cmd = argv.slice(i + 1);
      break;
    } else if (a === "--http" || a === "--sse") {
      opts.mode = a.slice(2);
      opts.url = next();
    } else if (a === "--stdio") {
      opts.mode = "stdio";
    } else if (a === "--ops") {
      try {
        opts.ops = JSON.parse(next());
      } catch (e) {
        usage(`--ops is not JSON: ${e.message}`);
      }
      if (!Array.isArray(opts.ops)) usage("--ops must be a JSON array");
    } else if (a === "--timeout") {
      opts.timeout = Number(next());
      if (!(opts.timeout > 0)) usage("--timeout must be a positive number of ms");
    } else {
      usage(`unknown argument ${a}`);
    }
  }
  if (opts.mode === null) opts.mode = "stdio";
  if (opts.mode === "stdio" && opts.cmd.length === 0) usage("--stdio needs -- CMD ARGS...");
  if (opts.mode !== "stdio" && opts.cmd.length !== 0) usage(`--${opts.mode} takes no CMD`);
  return opts;
}

// Rejects with a timeout error if p has not settled within ms: a backstop
// (set 500 ms past the SDK's own request timeout, which reports code -32001).
function withTimeout(p, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const e = new Error(`${what} timed out after ${ms} ms`);
      e.timedOut = true;
      reject(e);
    }, ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function failure(err) {
  const out = { ok: false, code: null, error: String(err && err.message ? err.message : err) };
  if (err instanceof McpError && Number.isInteger(err.code)) {
    out.code = err.code;
  } else if ((err instanceof StreamableHTTPError || err instanceof SseError) && Number.isInteger(err.code)) {
    // These carry an HTTP status (or -1), not a JSON-RPC code.
    out.http_status = err.code;
  }
  return out;
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null;
}

// Ends the stdio server if it still runs: stdin closed, then SIGTERM after
// 2 s, then SIGKILL after 2 s more.
async function reap(child) {
  const waitExit = (ms) =>
    exited(child)
      ? Promise.resolve()
      : new Promise((resolve) => {
          const t = setTimeout(resolve, ms);
          child.once("exit", () => {
            clearTimeout(t);
            resolve();
          });
        });
  if (exited(child)) return;
  try {
    child.stdin?.end();
  } catch {
    // ignore
  }
  await waitExit(2000);
  for (const sig of ["SIGTERM", "SIGKILL"]) {
    if (exited(child)) return;
    try {
      child.kill(sig);
    } catch {
      // ignore
    }
    await waitExit(2000);
  }
}

async function runOp(client, op, timeout) {
  const kind = op && typeof op === "object" ? op.op : undefined;
  const head = { op: kind ?? null };
  if (kind === "call") head.name = op.name ?? null;
  const reqOpts = { timeout, maxTotalTimeout: timeout };
  try {
    if (kind === "list") {
      const work = (async () => {
        const tools = [];
        let pages = 0;
        let cursor;
        const seen = new Set();
        for (;;) {
          const res = await client.listTools(cursor === undefined ? {} : { cursor }, reqOpts);
          pages++;
          for (const t of res.tools ?? []) tools.push(t.name);
          cursor = res.nextCursor;
          if (cursor === undefined || cursor === null) break;
          if (seen.has(cursor)) throw new Error(`tools/list repeated cursor ${JSON.stringify(cursor)}`);
          seen.add(cursor);
        }
        return { ok: true, tools, pages };
      })();
      return { ...head, ...(await withTimeout(work, timeout + 500, "list")) };
    }
    if (kind === "call") {
      const res = await withTimeout(
        client.callTool({ name: op.name, arguments: op.args ?? {} }, undefined, reqOpts),
        timeout + 500,
        "call",
      );
      const text = (res.content ?? [])
        .filter((c) => c && c.type === "text" && typeof c.text === "string")
        .map((c) => c.text)
        .join("");
      return { ...head, ok: true, isError: res.isError === true, text };
    }
    if (kind === "ping") {
      await withTimeout(client.ping(reqOpts), timeout + 500, "ping");
      return { ...head, ok: true };
    }
    return { ...head, ok: false, code: null, error: `unknown op ${JSON.stringify(kind)}` };
  } catch (err) {
    return { ...head, ...failure(err) };
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let transport;
  if (opts.mode === "stdio") {
    transport = new StdioClientTransport({
      command: opts.cmd[0],
      args: opts.cmd.slice(1),
      env: { ...process.env },
      stderr: "inherit",
    });
  } else if (opts.mode === "http") {
    transport = new StreamableHTTPClientTransport(new URL(opts.url));
  } else {
    transport = new SSEClientTransport(new URL(opts.url));
  }
  const client = new Client({ name: "guard-mcp-test-client", version: "1.0.0" }, { capabilities: {} });
  // Errors the transport reports outside a request (e.g. the server exiting)
  // surface as failed ops; keep them off stdout.
  client.onerror = (err) => process.stderr.write(`client.mjs: transport error: ${err?.message ?? err}\n`);

  // Keep hold of the server process: when connecting fails the SDK starts
  // closing the transport without waiting, and forgets the process.
  let child = null;
  if (opts.mode === "stdio") {
    const start = transport.start.bind(transport);
    transport.start = async () => {
      try {
        await start();
      } finally {
        child = transport._process ?? null;
      }
    };
  }

  const out = { connect: null, results: [] };
  try {
    await withTimeout(client.connect(transport, { timeout: opts.timeout }), opts.timeout + 500, "connect");
    out.connect = { ok: true };
  } catch (err) {
    out.connect = failure(err);
  }
  for (const op of opts.ops) {
    if (out.connect.ok) {
      out.results.push(await runOp(client, op, opts.timeout));
    } else {
      const head = { op: op?.op ?? null };
      if (head.op === "call") head.name = op.name ?? null;
      out.results.push({ ...head, ok: false, code: null, error: "not connected" });
    }
  }

  // Close: for HTTP, end the session politely; for stdio, the SDK closes the
  // server's stdin and escalates to SIGTERM/SIGKILL. Never wait too long.
  try {
    if (opts.mode === "http" && out.connect.ok && transport.sessionId) {
      await withTimeout(transport.terminateSession(), 2000, "terminate").catch(() => {});
    }
    await withTimeout(client.close(), 6000, "close");
  } catch {
    // the stdio server is reaped below
  }
  if (child && child.pid !== undefined) await reap(child);
  return out;
}

let out;
try {
  out = await main();
} catch (err) {
  process.stderr.write(`client.mjs: bug: ${err?.stack ?? err}\n`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
