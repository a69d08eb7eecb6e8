#!/usr/bin/env bash
# Emits a C++ file that defines NAMESPACE::NAME as the contents of FILE.
set -euo pipefail
file=$1 ns=$2 name=$3
delim=GUARDEMBED
if grep -q "$delim" "$file"; then
  echo "embed.sh: $file contains the delimiter $delim" >&2
  exit 1
fi
echo "// Generated from $file by scripts/embed.sh; do not edit."
echo "namespace $ns {"
echo "extern const char $name[];"
printf 'const char %s[] = R"%s(' "$name" "$delim"
cat "$file"
printf ')%s";\n' "$delim"
echo "}  // namespace $ns"
