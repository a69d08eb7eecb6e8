# bench/proxy: the load generator bench/proxy/run.sh drives (build/bench/proxy-loadgen).
# Included at the end of the Makefile. BoringSSL only: BSSL_INC and BSSL_LIB name its
# directories; the system OpenSSL headers must never be on the include path.
PROXY_LOADGEN := $(BUILD)/bench/proxy-loadgen
PROXY_LOADGEN_BSSL_INC := $(or $(BSSL_INC),/usr/include/android)
PROXY_LOADGEN_BSSL_LIB := $(or $(BSSL_LIB),/usr/lib/x86_64-linux-gnu/android)

$(PROXY_LOADGEN): bench/proxy/loadgen.cc bench/proxy/module.mk
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wswitch-enum -O2 -g -pthread \
	  -isystem $(PROXY_LOADGEN_BSSL_INC) $< -o $@ \
	  -L$(PROXY_LOADGEN_BSSL_LIB) -Wl,-rpath,$(PROXY_LOADGEN_BSSL_LIB) -lssl -lcrypto -pthread

.PHONY: bench-proxy bench-proxy-smoke
bench-proxy: $(PROXY_LOADGEN)
	bench/proxy/run.sh
bench-proxy-smoke: $(PROXY_LOADGEN)
	bench/proxy/run.sh --smoke
