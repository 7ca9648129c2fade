#!/bin/sh
# zig and cargo-zigbuild, from PyPI, when they are not already here: what
# build-compat.sh links the linux-x64-gnu addon with (glibc 2.17). Idempotent.
# Prints the folder that holds their commands, for the caller's PATH.
#
# They go into a virtual environment of their own under the tools folder: a
# system Python refuses pip installs (PEP 668), and a user without root would
# get them in ~/.local/bin, which need not be on PATH.
set -eu
TOOLS=${OBO_NATIVE_TOOLS:-$HOME/.cache/obo-native-tools}
venv="$TOOLS/zig-venv"
bin="$venv/bin"
if [ ! -x "$bin/cargo-zigbuild" ] || ! "$bin/python" -m ziglang version >/dev/null 2>&1; then
  echo "installing ziglang and cargo-zigbuild from PyPI into $venv" >&2
  mkdir -p "$TOOLS"
  python3 -m venv "$venv" >&2
  "$bin/python" -m pip install --quiet --disable-pip-version-check 'ziglang==0.17.1' 'cargo-zigbuild==0.24.1' >&2
fi
PATH="$bin:$PATH" "$bin/cargo-zigbuild" --version >&2
echo "$bin"
