#!/usr/bin/env bash
# Structural checks that the compiler cannot make (STYLE.md sections 1 and 8):
#  (a) the shim exports exactly the names in interpose/exports.map's global list;
#  (b) the shim has no dynamic initialisers and does not need the C++ runtime;
#  (c) #include lines respect the module table of STYLE.md section 1.
# Prints one line per violation and exits 1 if there is any.
#
# Usage: scripts/lint.sh SHIM            (make lint: scripts/lint.sh build/libguard-interpose.so)
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 path/to/libguard-interpose.so" >&2
  exit 2
fi
shim="$1"
cd "$(dirname "$0")/.." || exit 2
map=interpose/exports.map

# kAllowedInitEntries is the number of .init_array entries the shim may have.
# STYLE.md section 8 allows at most one documented `constructor` (with an
# environment switch to turn it off). The shim has one, documented in
# interpose/init.c: it resolves the real libc functions before any thread
# exists, arms the stdin sniffer and finishes the check of a program started
# by posix_spawn. It has no switch, on purpose: the environment belongs to
# the agent, and a switch would let it start an MCP server unchecked.
kAllowedInitEntries=1

violations=0
violation() {
  echo "lint: $*"
  violations=$((violations + 1))
}

for tool in nm readelf; do
  if ! command -v "$tool" >/dev/null; then
    echo "lint: $tool not found (binutils)" >&2
    exit 2
  fi
done

# ---- (a) exported symbols --------------------------------------------------
if [ ! -f "$shim" ]; then
  violation "$shim: shim not found (build it with make)"
else
  # The names between "global:" and "local:", comments removed.
  expected=$(sed -e 's:/\*.*\*/::g' -e 's/#.*//' "$map" |
    awk '/global:/ { on = 1; sub(/.*global:/, "") } /local:/ { on = 0 } on' |
    tr ';' '\n' | tr -d ' \t' | grep -v '^$' | sort -u)
  if [ -z "$expected" ]; then
    violation "$map: no names in the global list"
  fi
  # Defined dynamic symbols; strip symbol versions (name@@VER).
  actual=$(nm -D --defined-only "$shim" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | sort -u)
  while read -r name; do
    [ -n "$name" ] && violation "$shim: exports '$name', which $map does not list"
  done < <(comm -13 <(printf '%s\n' "$expected") <(printf '%s\n' "$actual"))
  while read -r name; do
    [ -n "$name" ] && violation "$shim: does not export '$name', which $map lists"
  done < <(comm -23 <(printf '%s\n' "$expected") <(printf '%s\n' "$actual"))

  # ---- (b) no dynamic initialisers, no C++ runtime -------------------------
  # Section sizes (hex) of the sections that run code at load time.
  while read -r sec size; do
    bytes=$((16#$size))
    entries=$((bytes / 8))
    case "$sec" in
      .init_array)
        if [ "$entries" -gt "$kAllowedInitEntries" ]; then
          violation "$shim: .init_array has $entries entries (allowed: $kAllowedInitEntries);" \
            "a global with a dynamic initialiser or an undocumented constructor (STYLE.md §8)"
        fi
        ;;
      .ctors | .preinit_array)
        if [ "$entries" -gt 0 ]; then
          violation "$shim: $sec has $entries entries; the shim must have no static constructors"
        fi
        ;;
      .init)
        if [ "$bytes" -gt 0 ]; then
          violation "$shim: has an .init section; link with -nostartfiles (no _init)"
        fi
        ;;
    esac
  done < <(readelf -SW "$shim" |
    sed -n 's/^ *\[ *[0-9]*\] *//p' |
    awk '$1 == ".init_array" || $1 == ".ctors" || $1 == ".preinit_array" || $1 == ".init" {
           print $1, $5 }')
  if readelf -dW "$shim" | grep -q '(INIT)'; then
    violation "$shim: dynamic section has DT_INIT; the shim must not run code at load time"
  fi
  while read -r lib; do
    case "$lib" in
      libstdc++.so* | libc++.so* | libc++abi.so*)
        violation "$shim: needs $lib; the shim must not depend on the C++ runtime (STYLE.md §8)"
        ;;
    esac
  done < <(readelf -dW "$shim" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p')
fi

# ---- (c) #include lines against the module table ---------------------------
# top_folder PATH prints the first component of a repository-relative path.
top_folder() {
  local p="${1#./}"
  echo "${p%%/*}"
}

# resolve FILE INCLUDE prints the repository-relative path INCLUDE names, or
# nothing for a system or third-party header. Quoted includes resolve like
# the compiler: next to FILE first, then from the root (-I.).
resolve() {
  local file="$1" inc="$2" dir cand
  dir=$(dirname "$file")
  for cand in "$dir/$inc" "$inc"; do
    if [ -f "$cand" ]; then
      realpath -m --relative-to=. "$cand"
      return
    fi
  done
  # Not present (yet): judge by its folder if that is a project folder.
  case "$(top_folder "$inc")" in
    policy | fusefs | mitm-proxy | vmhost | interpose | cli | tests | bench)
      echo "$inc"
      ;;
  esac
}

# allowed FOLDER TARGET: may a file in FOLDER include repository file TARGET?
allowed() {
  local folder="$1" target="$2" tfolder
  tfolder=$(top_folder "$target")
  case "$folder" in
    policy)
      [ "$tfolder" = policy ]
      ;;
    interpose)
      [ "$tfolder" = interpose ] || [ "$target" = policy/wire.h ]
      ;;
    fusefs | mitm-proxy | vmhost)
      [ "$tfolder" = "$folder" ] || [ "$tfolder" = policy ]
      ;;
    *)
      return 0  # cli/, tests/, bench/: may depend on anything
      ;;
  esac
}

rule_for() {
  case "$1" in
    policy) echo "policy/ includes only policy/ headers and third-party libraries" ;;
    interpose) echo "interpose/ includes at most policy/wire.h (and libc)" ;;
    *) echo "$1/ includes only its own and policy/ headers; components never include each other's" ;;
  esac
}

for folder in policy interpose fusefs mitm-proxy vmhost; do
  [ -d "$folder" ] || continue
  while IFS= read -r -d '' file; do
    lineno=0
    while IFS= read -r line || [ -n "$line" ]; do
      lineno=$((lineno + 1))
      [[ "$line" =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*([\"\<])([^\"\>]+)[\"\>] ]] ||
        continue
      inc="${BASH_REMATCH[2]}"
      if [[ "$inc" == ../* || "$inc" == */../* ]]; then
        violation "$file:$lineno: #include \"$inc\" climbs with '..'; include from the root" \
          "(e.g. \"policy/wire.h\")"
        continue
      fi
      target=$(resolve "$file" "$inc")
      [ -n "$target" ] || continue  # system or third-party header
      if ! allowed "$folder" "$target"; then
        violation "$file:$lineno: #include \"$inc\" ($target) is not allowed:" \
          "$(rule_for "$folder") (STYLE.md §1)"
      fi
    done < "$file"
  done < <(find "$folder" -type f \( -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o \
             -name '*.h' -o -name '*.hh' -o -name '*.hpp' -o -name '*.inc' \) -print0 | sort -z)
done

if [ "$violations" -ne 0 ]; then
  echo "lint: $violations violation(s)"
  exit 1
fi
echo "lint: ok ($shim exports $(printf '%s\n' "$expected" | wc -l) symbol(s); includes follow STYLE.md §1)"
