# The loopback network fixtures (tests/net/net_fixture.cc: PKI, nginx origins,
# DNS upstream; tests/net/raw_servers.cc: sshd and a banner server) linked
# into the test suite. Included at the end of the Makefile, after TEST_OBJ is
# fixed, so the objects join $(TESTS) as extra prerequisites: the link
# recipe's $^ lists them, and the %.o rule builds them.
NET_FIXTURE_OBJ := $(BUILD)/tests/net/net_fixture.o $(BUILD)/tests/net/raw_servers.o

$(TESTS): $(NET_FIXTURE_OBJ)
