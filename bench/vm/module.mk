# bench/vm: `guard --vm -- true` against a bare microvm boot (bench/vm/run.sh), and
# file and network throughput in VM mode against host mode (bench/vm/throughput.sh).
.PHONY: bench-vm bench-vm-smoke bench-vm-throughput
bench-vm: $(GUARD) $(SHIM) vm-image
	bench/vm/run.sh --guard $(GUARD)
bench-vm-throughput: $(GUARD) $(SHIM) $(PROXY_LOADGEN) vm-image
	bench/vm/throughput.sh --guard $(GUARD) --loadgen $(PROXY_LOADGEN)
bench-vm-smoke: $(GUARD) $(SHIM) $(PROXY_LOADGEN) vm-image
	bench/vm/run.sh --smoke --guard $(GUARD)
	bench/vm/throughput.sh --smoke --guard $(GUARD) --loadgen $(PROXY_LOADGEN)
