# bench/vm: `guard --vm -- true` against a bare microvm boot (bench/vm/run.sh).
.PHONY: bench-vm bench-vm-smoke
bench-vm: $(GUARD) $(SHIM) vm-image
	bench/vm/run.sh --guard $(GUARD)
bench-vm-smoke: $(GUARD) $(SHIM) vm-image
	bench/vm/run.sh --smoke --guard $(GUARD)
