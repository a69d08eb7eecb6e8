#!/usr/bin/env node
// A small stdio MCP server (the TypeScript SDK's low-level Server) whose
// tools/list is paginated, for testing clients and proxies across pages.
//
//   node paged-server.mjs [--tools N] [--page-size K]     (defaults 7 and 3)
//
// Tools are named tool-1 .. tool-N; tools/list returns K per page with an
// opaque nextCursor until the last page. Calling any tool-I returns the text
// "tool-I: " followed by the "message" argument.
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { CallToolRequestSchema, ListToolsRequestSchema, McpError, ErrorCode } from "@modelcontextprotocol/sdk/types.js";

let total = 7;
let pageSize = 3;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--tools") total = Number(argv[++i]);
  else if (argv[i] === "--page-size") pageSize = Number(argv[++i]);
  else {
    process.stderr.write(`paged-server.mjs: unknown argument ${argv[i]}\n`);
    process.exit(2);
  }
}
if (!(Number.isInteger(total) && total >= 0 && Number.isInteger(pageSize) && pageSize > 0)) {
  process.stderr.write("paged-server.mjs: --tools must be >= 0 and --page-size > 0\n");
  process.exit(2);
}

const names = Array.from({ length: total }, (_, i) => `tool-${i + 1}`);
const server = new Server({ name: "guard-paged-server", version: "1.0.0" }, { capabilities: { tools: {} } });

server.setRequestHandler(ListToolsRequestSchema, async (req) => {
  const cursor = req.params?.cursor;
  let start = 0;
  if (cursor !== undefined) {
    const m = /^page:(\d+)$/.exec(Buffer.from(String(cursor), "base64").toString("utf8"));
    if (!m) throw new McpError(ErrorCode.InvalidParams, `bad cursor ${cursor}`);
    start = Number(m[1]);
  }
  const end = Math.min(start + pageSize, names.length);
  const tools = names.slice(start, end).map((name) => ({
    name,
    description: `paged test tool ${name}`,
    inputSchema: { type: "object", properties: { message: { type: "string" } } },
  }));
  const res = { tools };
  if (end < names.length) res.nextCursor = Buffer.from(`page:${end}`).toString("base64");
  return res;
});

server.setRequestHandler(CallToolRequestSchema, async (req) => {
  const { name, arguments: args } = req.params;
  if (!names.includes(name)) throw new McpError(ErrorCode.InvalidParams, `unknown tool ${name}`);
  return { content: [{ type: "text", text: `${name}: ${args?.message ?? ""}` }] };
});

await server.connect(new StdioServerTransport());
