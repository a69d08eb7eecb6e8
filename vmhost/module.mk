# VM mode (guard --vm): the guest's PID 1, a small static program packed
# into the initramfs, and the guest image that scripts/vm-prepare.sh makes
# from Debian's cloud kernel (downloaded once into $(BUILD)/vm; `make`
# alone never downloads, `make check` and `make vm-image` do).
VM_INIT := $(BUILD)/guard-vm-init

all: $(VM_INIT)

# No sanitizers and no third-party libraries: it runs alone in the guest.
$(VM_INIT): vmhost/guest_init.cc vmhost/vm_wire.h policy/wire.h
	@mkdir -p $(dir $@)
	$(CXX) $(CXXSTD) $(WARN) -Os -static -s -I. $< -o $@

.PHONY: vm-image
vm-image: $(VM_INIT)
	GUARD_VM_DIR=$(BUILD)/vm scripts/vm-prepare.sh --init $(VM_INIT)

check: vm-image
