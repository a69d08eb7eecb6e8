// Preload (node --require ./loopback.cjs SERVER.js ...) that makes a server
// which listens on a port without naming a host (as server-everything's HTTP
// transports do: app.listen(PORT), i.e. every address) listen on 127.0.0.1
// only, or on $MCP_LISTEN_HOST when set. Listens that name a host, a path or
// a handle are left alone.
"use strict";
const net = require("node:net");
const host = process.env.MCP_LISTEN_HOST || "127.0.0.1";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a0 = args[0];
  if (typeof a0 === "number" || (typeof a0 === "string" && /^\d+$/.test(a0))) {
    // listen(port[, host][, backlog][, cb]): add the host when none is given
    if (typeof args[1] !== "string") args.splice(1, 0, host);
  } else if (a0 && typeof a0 === "object" && !Array.isArray(a0) && a0.port !== undefined && a0.host === undefined && a0.path === undefined) {
    args[0] = { ...a0, host };
  }
  return listen.apply(this, args);
};
