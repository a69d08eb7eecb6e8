# The loopback network fixtures (tests/net/net_fixture.cc: PKI, nginx origins,
# DNS upstream) linked into the test suite. Included at the end of the
# Makefile, after TEST_OBJ is fixed, so the object joins $(TESTS) as an extra
# prerequisite: the link recipe's $^ lists it, and the %.o rule builds it.
NET_FIXTURE_OBJ := $(BUILD)/tests/net/net_fixture.o

$(TESTS): $(NET_FIXTURE_OBJ)
