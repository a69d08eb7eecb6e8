# Tiny C programs the [host] integration tests run under guard
# (tests/integration/host_test.cc). Included at the end of the Makefile.
HELPER_SRC    := $(wildcard tests/helpers/*.c)
HELPERS       := $(HELPER_SRC:tests/helpers/%.c=$(BUILD)/tests/helpers/%)
HELPER_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror
# Helpers that must not depend on the dynamic loader.
HELPER_STATIC := rawsys rawnet

$(BUILD)/tests/helpers/%: tests/helpers/%.c
	@mkdir -p $(dir $@)
	$(CC) $(HELPER_CFLAGS) $(if $(filter $*,$(HELPER_STATIC)),-static) $< -o $@

# Order-only: the helpers are built with the suite but are not linked into it.
$(TESTS): | $(HELPERS)
