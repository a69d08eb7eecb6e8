/* libguard-interpose.so: the LD_PRELOAD shim. This build carries only its ABI
   marker; the exec and MCP interposers arrive with MCP governance. It holds
   no state and changes no behaviour of the process it is loaded into. */
#define GUARD_EXPORT __attribute__((visibility("default")))

/* guard_interpose_abi_version lets the session check that the shim it
   preloads speaks the same wire format as itself. */
GUARD_EXPORT int guard_interpose_abi_version(void) { return 1; }
