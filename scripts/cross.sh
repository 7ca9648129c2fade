#!/bin/sh
# The Linux targets this x64 machine has no rustup standard library for, built
# from Debian's packages, and smoke-tested where a runtime of their platform runs
# here (scripts/smoke.js: an exchange against the mock provider, a hit, an
# error), with obo-native and the platform's package installed from the
# tarballs `npm run package` makes.
#
#   linux-x64-musl   Debian's rustc-web 1.96 and rust-web-src: -Zbuild-std
#                    (RUSTC_BOOTSTRAP=1), linked by musl-gcc (musl-tools). Run
#                    by Bun's musl build (@oven/bun-linux-x64-musl, which
#                    implements Node-API).
#   linux-arm64-musl The same std build, linked by zig (cargo-zigbuild, through
#                    napi build --cross-compile); run by Bun's arm64 musl build
#                    under qemu-user-static. Not in CI's run (a second 10-minute
#                    build from scratch).
#   linux-arm64-gnu  Debian's rustc-web with libstd-rust-web-dev:arm64, linked
#                    by gcc-aarch64-linux-gnu. Built and checked (an aarch64
#                    ELF, its glibc floor printed), not run: under qemu-user
#                    (7.2 and 10.0) the arm64 Node and Bun builds for glibc spin
#                    at start-up or on their first timer (docs/releasing.md).
#
# Bun's musl build needs musl >= 1.2.4 (Debian 12's 1.2.3 crashes it at
# start-up): the loader comes from Debian 13's musl package, unpacked into the
# tools folder with a private apt state (the machine's sources are left as they
# are). It also needs libstdc++ and libgcc_s built for musl, which Debian does
# not package: numpy's musllinux wheel from PyPI carries both.
#
# Usage: scripts/cross.sh [PLATFORM...]   (default: linux-x64-musl linux-arm64-gnu; linux-arm64-musl when named)
# Leaves obo-native.<platform>.node in the repository root, where
# `npm run package` finds it. Idempotent: installs only what is missing, under
# ${OBO_NATIVE_TOOLS:-~/.cache/obo-native-tools} and through apt-get.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS=${OBO_NATIVE_TOOLS:-$HOME/.cache/obo-native-tools}
RUNTIMES="$TOOLS/runtimes"
PLATFORMS=${*:-linux-x64-musl linux-arm64-gnu}
BUN_VERSION=1.4.4
NUMPY_VERSION=2.4.6

log() { echo "cross: $*"; }

apt_packages() {
  need=
  for platform in $PLATFORMS; do
    case $platform in
      linux-x64-musl) set -- rustc-web cargo-web rust-web-src musl-tools ;;
      linux-arm64-musl) set -- rustc-web cargo-web rust-web-src qemu-user-static ;;
      linux-arm64-gnu)
        dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
        set -- rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static ;;
    esac
    for package in "$@"; do
      dpkg -s "$package" >/dev/null 2>&1 || need="$need $package"
    done
  done
  if [ -n "$need" ]; then
    log "apt-get install$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
  fi
}

# A runtime from the npm registry, unpacked once: prints its folder.
npm_runtime() {
  spec=$1
  dir="$RUNTIMES/$(echo "$spec" | tr '/@' '+-' | sed 's/^-//')"
  if [ ! -d "$dir/package" ]; then
    mkdir -p "$dir"
    (cd "$dir" && tarball=$(npm pack --silent "$spec") && tar -xzf "$tarball" && rm -f "$tarball")
  fi
  echo "$dir/package"
}

# musl 1.2.5's loader for ARCH (amd64 or arm64), from Debian 13, unpacked once
# with a private apt state (the machine's sources are left as they are).
musl_loader() {
  arch=$1
  dir="$TOOLS/musl-1.2.5-$arch"
  if [ ! -d "$dir/usr" ]; then
    state="$TOOLS/apt-trixie"
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$dir"
    echo "deb http://deb.debian.org/debian trixie main" >"$state/sources.list"
    set -- -o Dir::Etc::SourceList="$state/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
      -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" -o APT::Architectures::=amd64 -o APT::Architectures::=arm64
    apt-get "$@" update -qq
    (cd "$state" && rm -f musl_*_"$arch".deb && apt-get "$@" download -qq "musl:$arch" 2>/dev/null && dpkg -x musl_*_"$arch".deb "$dir")
  fi
  find "$dir/usr/lib" -path '*-linux-musl/libc.so' | head -n 1
}

# libstdc++ and libgcc_s built for musl (from numpy's musllinux wheel), under
# the names Bun asks for: prints the folder.
musl_cxx_libs() {
  wheel_arch=$1
  dir="$TOOLS/musl-cxx-$wheel_arch"
  if [ ! -e "$dir/libstdc++.so.6" ]; then
    mkdir -p "$dir/wheel"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform "musllinux_1_2_$wheel_arch" --python-version 3.11 -d "$dir/wheel" "numpy==$NUMPY_VERSION"
    (cd "$dir" && python3 -c '
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        base = name.rsplit("/", 1)[-1]
        if name.startswith("numpy.libs/") and (base.startswith("libstdc++") or base.startswith("libgcc_s")):
            open(base, "wb").write(wheel.read(name))
' "$dir"/wheel/*.whl)
    ln -sf "$(cd "$dir" && ls libstdc++-*.so.6*)" "$dir/libstdc++.so.6"
    ln -sf "$(cd "$dir" && ls libgcc_s-*.so.1 | head -n 1)" "$dir/libgcc_s.so.1"
  fi
  echo "$dir"
}

# Debian's cargo and rustc first on PATH (rustup's stay for everything else).
debian_rust_path() {
  bin="$TOOLS/debian-rust/bin"
  mkdir -p "$bin"
  for tool in cargo rustc rustdoc; do ln -sf "/usr/bin/$tool" "$bin/$tool"; done
  echo "$bin:$PATH"
}

build() {
  platform=$1
  log "building $platform"
  case $platform in
    linux-x64-musl)
      # musl-gcc finds no libgcc_s (std's unwinder links it): link against the musl one.
      linker="$TOOLS/bin/musl-gcc-link"
      mkdir -p "$TOOLS/bin"
      printf '#!/bin/sh\nexec musl-gcc "$@" -L"$OBO_MUSL_LIBS"\n' >"$linker"
      chmod +x "$linker"
      PATH=$(debian_rust_path) RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$ROOT/target/cross-musl" \
        OBO_MUSL_LIBS=$(musl_cxx_libs x86_64) CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER="$linker" CC_x86_64_unknown_linux_musl=musl-gcc \
        npx napi build --platform --release --no-js --dts binding.d.ts --target x86_64-unknown-linux-musl -- -Zbuild-std=std,panic_unwind ;;
    linux-arm64-musl)
      PATH=$(debian_rust_path):$(sh scripts/install-zig.sh) RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$ROOT/target/cross-musl-arm64" \
        npx napi build --platform --release --no-js --dts binding.d.ts --cross-compile --target aarch64-unknown-linux-musl -- -Zbuild-std=std,panic_unwind ;;
    linux-arm64-gnu)
      PATH=$(debian_rust_path) CARGO_TARGET_DIR="$ROOT/target/cross" \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        npx napi build --platform --release --no-js --dts binding.d.ts --target aarch64-unknown-linux-gnu ;;
    *) log "no route for $platform"; exit 2 ;;
  esac
  test -f "obo-native.$platform.node"
}

# obo-native and the platform's package from their tarballs, in PROJECT/node_modules.
install_from_tarballs() {
  platform=$1 project=$2 dist=$3
  version=$(node -p 'require("./package.json").version')
  rm -rf "$project"
  mkdir -p "$project/node_modules/obo-native" "$project/node_modules/obo-native-$platform"
  tar -xzf "$dist/obo-native-$version.tgz" -C "$project/node_modules/obo-native" --strip-components=1
  tar -xzf "$dist/obo-native-$platform-$version.tgz" -C "$project/node_modules/obo-native-$platform" --strip-components=1
  echo '{ "name": "cross-smoke", "private": true }' >"$project/package.json"
}

smoke() {
  platform=$1 project=$2
  case $platform in
    linux-x64-musl)
      bun=$(npm_runtime "@oven/bun-linux-x64-musl@$BUN_VERSION")
      loader=$(musl_loader amd64)
      libs=$(musl_cxx_libs x86_64)
      log "smoke test of $platform in Bun $BUN_VERSION (musl)"
      "$loader" --library-path "$libs" "$bun/bin/bun" "$ROOT/scripts/smoke.js" "$project" ;;
    linux-arm64-musl)
      bun=$(npm_runtime "@oven/bun-linux-aarch64-musl@$BUN_VERSION")
      loader=$(musl_loader arm64)
      libs=$(musl_cxx_libs aarch64)
      log "smoke test of $platform in Bun $BUN_VERSION (musl) under QEMU"
      qemu-aarch64-static "$loader" --library-path "$libs" "$bun/bin/bun" "$ROOT/scripts/smoke.js" "$project" ;;
    linux-arm64-gnu)
      readelf -h "obo-native.$platform.node" | grep -q 'Machine: *AArch64' || { log "obo-native.$platform.node is not an aarch64 binary"; exit 1; }
      log "$platform needs glibc $(objdump -T "obo-native.$platform.node" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -u -V | tail -n 1) (Debian 12's arm64 glibc links it; releases use zig's 2.17)"
      log "$platform: built and checked, not run (see the header of this script)" ;;
  esac
}

apt_packages
for platform in $PLATFORMS; do build "$platform"; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/obo-cross-XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
node scripts/package.js --out "$WORK/dist" >/dev/null
for platform in $PLATFORMS; do
  install_from_tarballs "$platform" "$WORK/$platform" "$WORK/dist"
  smoke "$platform" "$WORK/$platform"
done
log "ok: $PLATFORMS"
