# bench/mcp: guard's MCP supervisor on its own (build/bench/mcp-supervisor), which
# bench/mcp/run.sh starts for the shim-overhead runs, and the run.sh targets.
# Included at the end of the Makefile.
MCP_SUPERVISOR := $(BUILD)/bench/mcp-supervisor

$(MCP_SUPERVISOR): bench/mcp/supervisor.cc $(BUILD)/libguard.a bench/mcp/module.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) $< $(BUILD)/libguard.a -o $@ $(LDFLAGS) $(LDLIBS)

.PHONY: bench-mcp bench-mcp-smoke
bench-mcp: $(GUARD) $(SHIM) $(MCP_SUPERVISOR)
	bench/mcp/run.sh --guard $(GUARD) --shim $(SHIM) --supervisor $(MCP_SUPERVISOR)
bench-mcp-smoke: $(GUARD) $(SHIM) $(MCP_SUPERVISOR)
	bench/mcp/run.sh --smoke --guard $(GUARD) --shim $(SHIM) --supervisor $(MCP_SUPERVISOR)
