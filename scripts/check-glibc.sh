#!/bin/sh
# Fails when a Linux binary needs a glibc newer than the floor (default 2.17):
# the highest GLIBC_ symbol version that `objdump -T` lists must not exceed it.
# Usage: scripts/check-glibc.sh FILE.node [FLOOR]
set -eu
file=$1
floor=${2:-2.17}
highest=$(objdump -T "$file" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -u -V | tail -n 1)
if [ -z "$highest" ]; then
  echo "check-glibc: $file has no GLIBC_ symbol versions (not a glibc binary?)" >&2
  exit 1
fi
if [ "$(printf '%s\n%s\n' "$floor" "$highest" | sort -V | tail -n 1)" != "$floor" ]; then
  echo "check-glibc: $file needs glibc $highest, above the floor $floor, for:" >&2
  objdump -T "$file" | awk -v floor="$floor" '
    function newer(a, b,   A, B, i) {
      split(a, A, "."); split(b, B, ".")
      for (i = 1; i <= 3; i++) if ((A[i] + 0) != (B[i] + 0)) return (A[i] + 0) > (B[i] + 0)
      return 0
    }
    match($0, /GLIBC_[0-9][0-9.]*/) {
      version = substr($0, RSTART + 6, RLENGTH - 6)
      if (newer(version, floor)) print "  " $NF " (GLIBC_" version ")"
    }' >&2
  exit 1
fi
echo "check-glibc: $file needs glibc $highest at most (floor $floor): ok"
