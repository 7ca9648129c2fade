#!/bin/sh
# zig and cargo-zigbuild, from PyPI, when they are not already here: what
# build-compat.sh links the linux-x64-gnu addon with (glibc 2.17). Idempotent.
# Prints the folder pip puts their commands in, for the caller's PATH.
set -eu
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
PATH="$scripts_dir:$PATH"
if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -m ziglang version >/dev/null 2>&1; then
  echo "installing ziglang and cargo-zigbuild from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'ziglang==0.17.1' 'cargo-zigbuild==0.24.1' >&2
fi
cargo-zigbuild --version >&2
echo "$scripts_dir"
