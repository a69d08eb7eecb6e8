# guard: one binary (build/guard), the preload shim (build/libguard-interpose.so)
# and the test, fuzz and benchmark programs. `make help` lists the targets.

BUILD    ?= build
CXX      ?= g++
CXXSTD   := -std=c++20
WARN     := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wswitch-enum
OPT      ?= -O2 -g
SAN      ?=
ifneq ($(SAN),)
  OPT    := -O1 -g -fno-omit-frame-pointer -fsanitize=$(SAN) -fno-sanitize-recover=all
  BUILD  := build-san
  # GCC 12 with -fsanitize=address reports false -Wmaybe-uninitialized in
  # libstdc++'s <regex> (pulled in by catch.hpp); -Werror would stop the build.
  WARN   += -Wno-maybe-uninitialized
endif

# Debian's BoringSSL has no .pc file: name its directories explicitly, and
# never let the system OpenSSL onto the include or link path.
BSSL_INC := /usr/include/android
BSSL_LIB := /usr/lib/x86_64-linux-gnu/android
BSSL     := -L$(BSSL_LIB) -Wl,-rpath,$(BSSL_LIB) -lssl -lcrypto

PKGS     := yaml-cpp spdlog fuse3 libidn2 libseccomp libcares libnftnl libmnl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CPPFLAGS := -I. -isystem $(BSSL_INC) -DSPDLOG_FMT_EXTERNAL $(PKG_CFLAGS) -MMD -MP
CXXFLAGS := $(CXXSTD) $(WARN) $(OPT) -pthread
LDFLAGS  += $(if $(SAN),-fsanitize=$(SAN))
LDLIBS   := $(PKG_LIBS) $(BSSL) -pthread
# guard itself links the libraries that Debian ships as archives statically:
# five fewer shared objects to map and search at each start, and at each
# lazily bound call in the processes it forks (`guard -- true` 1-1.7 ms
# faster, ~8%). libstdc++, spdlog, fmt, libidn2, libmnl and BoringSSL stay
# shared (no archive, or a C++ runtime that must be one copy).
GUARD_STATIC := yaml-cpp fuse3 libseccomp libcares libnftnl
GUARD_LDLIBS := -Wl,-Bstatic $(shell pkg-config --libs-only-l $(GUARD_STATIC) 2>/dev/null) \
                -Wl,-Bdynamic $(shell pkg-config --libs spdlog libidn2 libmnl 2>/dev/null) \
                $(BSSL) -pthread

POLICY_SRC := $(wildcard policy/*.cc)
CLI_SRC    := $(wildcard cli/*.cc)
LIB_SRC    := $(POLICY_SRC) $(wildcard fusefs/*.cc) $(wildcard mitm-proxy/*.cc) \
              $(filter-out vmhost/guest_init.cc,$(wildcard vmhost/*.cc))
LIB_OBJ    := $(LIB_SRC:%.cc=$(BUILD)/%.o) $(BUILD)/policy/default_policy.o
CLI_OBJ    := $(CLI_SRC:%.cc=$(BUILD)/%.o)
TEST_SRC   := $(wildcard tests/unit/*/*.cc) $(wildcard tests/integration/*.cc) tests/test_main.cc tests/testing.cc
TEST_OBJ   := $(TEST_SRC:%.cc=$(BUILD)/%.o)
FUZZ_SRC   := $(wildcard tests/fuzz/*_fuzz.cc)

GUARD      := $(BUILD)/guard
SHIM       := $(BUILD)/libguard-interpose.so
TESTS      := $(BUILD)/guard-tests
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%_fuzz.cc=$(BUILD)/fuzz/%_replay)

.PHONY: all test check fuzz fuzz-replay bench bench-smoke format lint clean help san

all: $(GUARD) $(SHIM)

help:
	@echo "make            build build/guard and build/libguard-interpose.so"
	@echo "make test       unit tests ([unit])"
	@echo "make check      lint, fuzz corpus replay, every test, sanitizer run"
	@echo "make fuzz       run libFuzzer targets for FUZZ_SECONDS (default 60) each"
	@echo "make bench      benchmarks (bench/RESULTS.md explains each)"
	@echo "make SAN=address,undefined check   the same under ASan/UBSan"

$(BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

# The default policy is embedded as a string from policy/default.yaml.
$(BUILD)/policy/default_policy.cc: policy/default.yaml scripts/embed.sh
	@mkdir -p $(dir $@)
	scripts/embed.sh $< guard::policy kDefaultPolicyYaml > $@
$(BUILD)/policy/default_policy.o: $(BUILD)/policy/default_policy.cc
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BUILD)/libguard.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(GUARD): $(CLI_OBJ) $(BUILD)/libguard.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) $^ -o $@ $(if $(SAN),$(LDLIBS),$(GUARD_LDLIBS))

# The shim: C ABI, no C++ runtime, only the interposed names exported.
# -fno-delete-null-pointer-checks: libc's headers mark exec's arguments
# nonnull, but the wrappers must tolerate NULL as the kernel does.
# -U_FORTIFY_SOURCE: the wrappers define names that fortified headers inline.
# -e: the shim is also a program, the stand-in for a denied MCP server
# (interpose/entry.c).
SHIM_SRC := $(wildcard interpose/*.c)
SHIM_HDR := $(wildcard interpose/*.h) policy/wire.h
SHIM_FLAGS := -std=c11 -D_GNU_SOURCE -U_FORTIFY_SOURCE -O2 -g -fPIC -fvisibility=hidden \
  -fno-delete-null-pointer-checks \
  -Wall -Wextra -Werror -Wshadow -Wformat=2 -I.
$(SHIM): $(SHIM_SRC) $(SHIM_HDR) interpose/exports.map
	@mkdir -p $(dir $@)
	$(CC) $(SHIM_FLAGS) -shared -nostartfiles -Wl,--version-script=interpose/exports.map \
	  -Wl,-e,guardDeniedEntry -Wl,-z,now -Wl,-z,relro $(SHIM_SRC) -o $@ -ldl

$(TESTS): $(TEST_OBJ) $(BUILD)/libguard.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

test: all $(TESTS)
	GUARD_BIN=$(abspath $(GUARD)) $(TESTS) "[unit]"

# Fuzz targets double as corpus replayers (tests/fuzz/replay_main.cc). Each
# source is compiled by the %.o rule above, so header changes are tracked.
$(BUILD)/fuzz/%_replay: $(BUILD)/tests/fuzz/%_fuzz.o $(BUILD)/tests/fuzz/replay_main.o \
		$(BUILD)/libguard.a
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(LDFLAGS) $(BUILD)/tests/fuzz/$*_fuzz.o $(BUILD)/tests/fuzz/replay_main.o \
	  $(BUILD)/libguard.a -o $@ $(LDLIBS)
.SECONDARY: $(FUZZ_SRC:%.cc=$(BUILD)/%.o) $(BUILD)/tests/fuzz/replay_main.o

fuzz-replay: $(FUZZ_REPLAY)
	@set -e; for r in $(FUZZ_REPLAY); do n=$$(basename $$r _replay); \
	  $$r tests/fuzz/$${n}_corpus; done

# make fuzz FUZZ_SECONDS=N: clang++ + libFuzzer + ASan/UBSan builds in build-fuzz/.
FUZZ_SECONDS ?= 60
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

lint: all
	scripts/lint.sh $(SHIM)

# check: everything, ending with the suite's "N passed, N failed" line:
# lint, fuzz corpus replay, unit and view tests under ASan/UBSan, each
# libFuzzer target for CHECK_FUZZ_SECONDS, the benchmarks in smoke mode,
# then every test.
CHECK_FUZZ_SECONDS ?= 30
check: all $(TESTS) $(BUILD)/bench/proxy-loadgen lint fuzz-replay
ifeq ($(SAN),)
	$(MAKE) SAN=address,undefined build-san/guard-tests
	build-san/guard-tests "[unit],[view]" | tail -n 1
	scripts/fuzz.sh $(CHECK_FUZZ_SECONDS)
	$(MAKE) bench-smoke > /dev/null
	bench/host/run.sh --smoke --guard $(GUARD) > /dev/null
	$(MAKE) bench-proxy-smoke > /dev/null
	$(MAKE) bench-mcp-smoke > /dev/null
	$(MAKE) bench-vm-smoke > /dev/null
endif
	GUARD_BIN=$(abspath $(GUARD)) $(TESTS)

# san: `make check` built with ASan and UBSan into build-san/.
san:
	$(MAKE) SAN=address,undefined check

BENCH_SRC := $(wildcard bench/*/*.cc)
$(BUILD)/bench/%: bench/%/main.cc $(BUILD)/libguard.a
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) $< $(BUILD)/libguard.a -o $@ $(LDLIBS) -lbenchmark

bench: $(BUILD)/bench/policy
	$(BUILD)/bench/policy

bench-smoke: $(BUILD)/bench/policy
	$(BUILD)/bench/policy --benchmark_min_time=0.01

format:
	clang-format -i $$(git ls-files '*.cc' '*.h' '*.c')

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# The [host] tests' helper programs (tests/helpers/*.c).
-include tests/helpers/module.mk
# The network fixtures (tests/net/) and the proxy benchmark's load generator.
-include tests/net/module.mk
-include bench/proxy/module.mk
# The MCP governance benchmark (shim overhead, tools/call round trip).
-include bench/mcp/module.mk
# VM mode: the guest init and the guest image (make vm-image; make check runs it),
# and its benchmark against a bare microvm boot.
-include vmhost/module.mk
-include bench/vm/module.mk
