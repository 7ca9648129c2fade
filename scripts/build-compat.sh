#!/bin/sh
# The linux-x64-gnu addon as released: `cargo zigbuild` links it against
# glibc 2.17's symbol versions, so it loads on RHEL 7, Amazon Linux 2 and every
# later glibc (a plain `cargo build` takes the build machine's glibc as floor).
# Installs ziglang and cargo-zigbuild from PyPI when missing, then checks the
# result with objdump.
set -eu
cd "$(dirname "$0")/.."
scripts_dir=$(sh scripts/install-zig.sh)
PATH="$scripts_dir:$PATH"
export PATH
npx napi build --platform --release --cross-compile --target x86_64-unknown-linux-gnu.2.17 --no-js --dts binding.d.ts
sh scripts/check-glibc.sh obo-native.linux-x64-gnu.node 2.17
