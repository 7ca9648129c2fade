#!/bin/sh
# The package as a user gets it: `npm run package`, every tarball published to a
# private registry (verdaccio 6.8.0) on loopback, then `npm install obo-native`
# into an empty project with no cargo, rustc or C compiler on PATH, and the
# smoke test (an exchange against obo-native/testing's mock provider, a hit, an
# error) in that project. npm picks the platform package itself; the check
# fails if any installed package carries an install-time script.
#
# Verdaccio is installed once under ${OBO_NATIVE_TOOLS:-~/.cache/obo-native-tools};
# its storage, configuration and the project live in a temporary folder that
# is removed on exit, and the registry listens on a free loopback port.
# Set OBO_NATIVE_SKIP_PACKAGE=1 to use the tarballs already in dist/.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS=${OBO_NATIVE_TOOLS:-$HOME/.cache/obo-native-tools}
VERDACCIO_DIR="$TOOLS/verdaccio-6.8.0"
VERDACCIO="$VERDACCIO_DIR/node_modules/verdaccio/bin/verdaccio"
NODE=$(command -v node)
# npm's own entry point, to run it with PATH holding node alone.
NPM_CLI=$(node -p 'require("fs").realpathSync(process.argv[1])' "$(command -v npm)")

log() { echo "verify-install: $*"; }

if [ "${OBO_NATIVE_SKIP_PACKAGE:-0}" != 1 ]; then
  npm run --silent package
fi
set -- dist/obo-native-*.tgz
[ -e "$1" ] || { log "no tarballs in dist/"; exit 1; }

if [ ! -x "$VERDACCIO" ]; then
  log "installing verdaccio@6.8.0 into $VERDACCIO_DIR"
  npm install --prefix "$VERDACCIO_DIR" --no-audit --no-fund --no-save --loglevel=error verdaccio@6.8.0 >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/obo-verify-XXXXXX")
REGISTRY_PID=
cleanup() {
  if [ -n "$REGISTRY_PID" ]; then kill "$REGISTRY_PID" 2>/dev/null || true; wait "$REGISTRY_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORT=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
REGISTRY="http://127.0.0.1:$PORT/"
cat >"$WORK/config.yaml" <<EOF
storage: $WORK/storage
auth:
  htpasswd:
    file: $WORK/htpasswd
    max_users: 1
uplinks: {}
packages:
  '**':
    access: \$all
    publish: \$authenticated
    unpublish: \$authenticated
server:
  keepAliveTimeout: 5
log: { type: stdout, format: pretty, level: warn }
EOF
"$NODE" "$VERDACCIO" --config "$WORK/config.yaml" --listen "127.0.0.1:$PORT" >"$WORK/verdaccio.log" 2>&1 &
REGISTRY_PID=$!

# Wait for the registry to answer (it exits on its own if it cannot start).
until node -e 'require("http").get(process.argv[1] + "-/ping", (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on("error", () => process.exit(1))' "$REGISTRY"; do
  if ! kill -0 "$REGISTRY_PID" 2>/dev/null; then log "verdaccio did not start:"; cat "$WORK/verdaccio.log"; exit 1; fi
  sleep 0.2
done
log "verdaccio $("$NODE" "$VERDACCIO" --version) on $REGISTRY"

# A user for publishing, through the registry's own endpoint (as `npm adduser` does).
TOKEN=$(node -e '
  const body = JSON.stringify({ name: "release", password: "release-password-" + process.pid });
  const req = require("http").request(process.argv[1] + "-/user/org.couchdb.user:release",
    { method: "PUT", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
    (res) => { let data = ""; res.on("data", (c) => (data += c)); res.on("end", () => {
      const token = res.statusCode < 300 && JSON.parse(data).token;
      if (!token) { console.error(res.statusCode, data); process.exit(1); }
      console.log(token);
    }); });
  req.end(body);' "$REGISTRY")
printf '%s\n' "registry=$REGISTRY" "//127.0.0.1:$PORT/:_authToken=$TOKEN" "audit=false" "fund=false" "update-notifier=false" >"$WORK/npmrc"

# Platform packages first, then the main package, as a release does.
for tarball in dist/obo-native-[a-z]*-*.tgz dist/obo-native-[0-9]*.tgz; do
  [ -e "$tarball" ] || continue
  npm publish "$ROOT/$tarball" --userconfig "$WORK/npmrc" --registry "$REGISTRY" --loglevel=error >/dev/null
  log "published $(basename "$tarball")"
done

# A PATH with node and npm only: no cargo, rustc, cc, gcc, make or python.
mkdir -p "$WORK/bin" "$WORK/project"
ln -s "$NODE" "$WORK/bin/node"
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$NODE" "$NPM_CLI" >"$WORK/bin/npm"
chmod +x "$WORK/bin/npm"
for tool in cargo rustc cc gcc clang make python3; do
  if PATH="$WORK/bin" command -v "$tool" >/dev/null 2>&1; then log "$tool is still on the stripped PATH"; exit 1; fi
done

cd "$WORK/project"
printf '{ "name": "verify-install", "version": "1.0.0", "private": true }\n' >package.json
env -i HOME="$WORK/home" PATH="$WORK/bin" npm_config_userconfig="$WORK/npmrc" npm_config_cache="$WORK/npm-cache" \
  npm install obo-native --registry "$REGISTRY" --foreground-scripts --loglevel=warn >"$WORK/install.log" 2>&1 ||
  { cat "$WORK/install.log"; log "npm install failed"; exit 1; }
cat "$WORK/install.log"

# What npm installed: the main package without an addon of its own, this
# platform's package with its addon, and no lifecycle script anywhere.
env -i PATH="$WORK/bin" node -e '
  const fs = require("fs"), path = require("path");
  const dir = path.join(process.cwd(), "node_modules");
  const installed = fs.readdirSync(dir).filter((name) => name.startsWith("obo-native"));
  const scripts = ["preinstall", "install", "postinstall", "prepare", "preprepare", "postprepare"];
  for (const name of installed) {
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, name, "package.json"), "utf8"));
    const found = scripts.filter((script) => manifest.scripts && manifest.scripts[script]);
    if (found.length) { console.error(`${name} has install scripts: ${found}`); process.exit(1); }
  }
  const platformPackages = installed.filter((name) => name !== "obo-native");
  if (platformPackages.length !== 1) { console.error(`expected one platform package, found ${platformPackages}`); process.exit(1); }
  if (fs.readdirSync(path.join(dir, "obo-native")).some((file) => file.endsWith(".node"))) { console.error("obo-native carries an addon of its own"); process.exit(1); }
  console.log(`verify-install: installed ${installed.join(", ")}; no install scripts`);
'
env -i PATH="$WORK/bin" node "$ROOT/scripts/smoke.js" "$WORK/project"
log "ok"
