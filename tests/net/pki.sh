#!/usr/bin/env bash
# Test PKI for the network fixtures: a test CA and one leaf per name, plus an
# "untrusted" CA that no test trusts and its leaf untrusted.test.
#
#   tests/net/pki.sh OUTDIR NAME...
#
# Writes into OUTDIR (created if missing):
#   ca.pem, ca.key                      the test CA (trust this one)
#   untrusted-ca.pem, untrusted-ca.key  a second CA that nothing trusts
#   NAME.pem, NAME.key                  leaf for each NAME, SAN DNS:NAME (and
#                                       IP:NAME when NAME is an IP), signed by ca
#   untrusted.test.pem, .key            always made, signed by untrusted-ca;
#                                       passing untrusted.test as a NAME changes
#                                       nothing
# Keys are EC P-256 and mode 0600. Idempotent: an existing CA is kept, and an
# existing leaf is kept when it still verifies against its CA and names NAME.
# Exit status 0 on success, 1 on any openssl failure, 2 on usage errors.
set -euo pipefail

if [ "$#" -lt 1 ]; then
  echo "usage: $0 OUTDIR NAME..." >&2
  exit 2
fi
out=$1
shift
mkdir -p "$out"
umask 077

days=3650

# make_ca BASE CN: BASE.pem and BASE.key, self-signed, kept if present.
make_ca() {
  local base=$1 cn=$2
  if [ -s "$out/$base.pem" ] && [ -s "$out/$base.key" ]; then
    return 0
  fi
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$out/$base.key.tmp" -out "$out/$base.pem.tmp" -days "$days" -sha256 \
    -subj "/O=guard tests/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
  mv "$out/$base.key.tmp" "$out/$base.key"
  mv "$out/$base.pem.tmp" "$out/$base.pem"
  chmod 0644 "$out/$base.pem"
}

is_ip() {
  [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || [[ $1 == *:* ]]
}

# make_leaf NAME CABASE: NAME.pem and NAME.key signed by CABASE.
make_leaf() {
  local name=$1 ca=$2 san
  if [[ ! $name =~ ^[A-Za-z0-9.:*-]+$ ]]; then
    echo "pki.sh: bad name '$name'" >&2
    exit 2
  fi
  san="DNS:$name"
  if is_ip "$name"; then
    san="DNS:$name,IP:$name"
  fi
  if [ -s "$out/$name.pem" ] && [ -s "$out/$name.key" ] &&
    openssl verify -CAfile "$out/$ca.pem" "$out/$name.pem" >/dev/null 2>&1 &&
    openssl x509 -in "$out/$name.pem" -noout -ext subjectAltName 2>/dev/null |
    grep -qiF -- "DNS:$name"; then
    return 0
  fi
  local ext="$out/$name.ext.tmp"
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid:always" \
    "subjectAltName=$san" >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$out/$name.key.tmp" -out "$out/$name.csr.tmp" -subj "/O=guard tests/CN=$name" \
    2>/dev/null
  openssl x509 -req -in "$out/$name.csr.tmp" -CA "$out/$ca.pem" -CAkey "$out/$ca.key" \
    -CAcreateserial -CAserial "$out/$ca.srl" -days "$days" -sha256 -extfile "$ext" \
    -out "$out/$name.pem.tmp" 2>/dev/null
  rm -f "$out/$name.csr.tmp" "$ext"
  mv "$out/$name.key.tmp" "$out/$name.key"
  mv "$out/$name.pem.tmp" "$out/$name.pem"
  chmod 0644 "$out/$name.pem"
}

make_ca ca "guard test CA"
make_ca untrusted-ca "guard untrusted test CA"
for name in "$@"; do
  if [ "$name" != untrusted.test ]; then
    make_leaf "$name" ca
  fi
done
make_leaf untrusted.test untrusted-ca
