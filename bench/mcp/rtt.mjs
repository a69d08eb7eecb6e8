#!/usr/bin/env node
// tools/call round trips through a real MCP client (the official TypeScript
// SDK's Client and StdioClientTransport, from tests/mcp/node_modules).
//
//   node rtt.mjs [--n N] [--warmup W] [--tool NAME] [--fixtures DIR] -- CMD ARGS...
//
// Starts CMD ARGS as a stdio MCP server (its environment is this process's
// whole environment, as in tests/mcp/client.mjs; its stderr is kept and shown
// only on failure), connects, makes W unmeasured calls, then N sequential
// tools/call of NAME (default "echo", server-everything's) with the argument
// {"message": "bench-<i>"}, each timed from the call to its result with
// process.hrtime.bigint(). Every result must be the text "Echo: bench-<i>".
//
// --fixtures is the directory whose node_modules holds the SDK (default
// tests/mcp of this tree, found from this file's path); the SDK is loaded with
// createRequire, through its package's exports, so it does not matter where
// this script lies or what the working directory is.
//
// Prints one JSON object on stdout:
//   {"n":N,"warmup":W,"median_us":..,"p90_us":..,"p99_us":..,"mean_us":..,
//    "min_us":..,"max_us":..,"connect_ms":..}
// Percentiles are nearest-rank. Exit status: 0 when every call succeeded,
// 1 when connecting or a call failed (the message and the server's stderr go
// to stderr), 2 on a usage error.
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

function usage(msg) {
  process.stderr.write(
    `rtt.mjs: ${msg}\n` +
      "usage: node rtt.mjs [--n N] [--warmup W] [--tool NAME] [--fixtures DIR] -- CMD ARGS...\n",
  );
  process.exit(2);
}

const opts = { n: 1000, warmup: 100, tool: "echo", fixtures: resolve(here, "../../tests/mcp"), cmd: [] };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const next = () => {
    if (i + 1 >= argv.length) usage(`${a} needs a value`);
    return argv[++i];
  };
  if (a === "--") {
    opts.cmd = argv.slice(i + 1);
    break;
  } else if (a === "--n") {
    opts.n = Number(next());
  } else if (a === "--warmup") {
    opts.warmup = Number(next());
  } else if (a === "--tool") {
    opts.tool = next();
  } else if (a === "--fixtures") {
    opts.fixtures = resolve(next());
  } else {
    usage(`unknown option ${a}`);
  }
}
if (opts.cmd.length === 0) usage("no server command after --");
if (!Number.isInteger(opts.n) || opts.n < 1) usage("--n must be a positive integer");
if (!Number.isInteger(opts.warmup) || opts.warmup < 0) usage("--warmup must be an integer >= 0");

const require = createRequire(join(opts.fixtures, "package.json"));
let Client, StdioClientTransport;
try {
  ({ Client } = require("@modelcontextprotocol/sdk/client/index.js"));
  ({ StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js"));
} catch (e) {
  process.stderr.write(
    `rtt.mjs: cannot load @modelcontextprotocol/sdk from ${opts.fixtures}/node_modules ` +
      `(scripts/install-deps.sh installs it): ${e.message}\n`,
  );
  process.exit(1);
}

let serverErr = "";
const transport = new StdioClientTransport({
  command: opts.cmd[0],
  args: opts.cmd.slice(1),
  env: { ...process.env },
  stderr: "pipe",
});
transport.stderr?.on("data", (d) => {
  serverErr = (serverErr + d.toString()).slice(-4000);
});
const client = new Client({ name: "guard-bench-rtt", version: "1.0.0" });

async function fail(what, e) {
  process.stderr.write(`rtt.mjs: ${what}: ${e?.message ?? e}\n`);
  if (serverErr) process.stderr.write(`rtt.mjs: the server's stderr:\n${serverErr}\n`);
  try {
    await client.close();
  } catch {
    // already gone
  }
  process.exit(1);
}

async function call(i) {
  const message = `bench-${i}`;
  const r = await client.callTool({ name: opts.tool, arguments: { message } });
  const text = (r.content ?? []).map((c) => c.text ?? "").join("");
  if (r.isError || text !== `Echo: ${message}`) {
    throw new Error(`unexpected result of ${opts.tool}: ${JSON.stringify(r).slice(0, 300)}`);
  }
}

const t0 = process.hrtime.bigint();
try {
  await client.connect(transport);
} catch (e) {
  await fail(`cannot connect to ${opts.cmd.join(" ")}`, e);
}
const connectMs = Number(process.hrtime.bigint() - t0) / 1e6;

const samples = new Float64Array(opts.n);
try {
  for (let i = 0; i < opts.warmup; i++) await call(-1 - i);
  for (let i = 0; i < opts.n; i++) {
    const s = process.hrtime.bigint();
    await call(i);
    samples[i] = Number(process.hrtime.bigint() - s) / 1e3;
  }
} catch (e) {
  await fail("tools/call failed", e);
}
try {
  await client.close();
} catch {
  // the server's exit is not part of the measurement
}

const sorted = Array.from(samples).sort((a, b) => a - b);
const rank = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
const round1 = (x) => Math.round(x * 10) / 10;
const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
process.stdout.write(
  JSON.stringify({
    n: opts.n,
    warmup: opts.warmup,
    median_us: round1(rank(0.5)),
    p90_us: round1(rank(0.9)),
    p99_us: round1(rank(0.99)),
    mean_us: round1(mean),
    min_us: round1(sorted[0]),
    max_us: round1(sorted[sorted.length - 1]),
    connect_ms: round1(connectMs),
  }) + "\n",
);
process.exit(0);
