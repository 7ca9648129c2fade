#!/usr/bin/env node
'use strict';
/**
 * npx obo-native <command>
 *
 *   exchange   one real On-Behalf-Of exchange, explained (see `exchange --help`)
 *   explain    what an AADSTS number or an OAuth error code means, offline
 *   demo       the embedded mock identity provider: cache, coalescing, retries, throttling
 *
 * Exit codes: 0 success, 1 exchange refused (or code unknown), 2 bad usage.
 */

const HELP = `obo-native: the OAuth 2.0 On-Behalf-Of token exchange for Node.js servers.

Usage:
  obo-native exchange --scope SCOPES --assertion-file PATH [options]
      One real exchange against your identity provider: prints the token
      endpoint, the time taken, expires_in and the claims of the token
      received, or explains why it was refused and how to fix it.
      "obo-native exchange --help" lists the options.

  obo-native explain <code>
      What an AADSTS number (AADSTS65001) or an OAuth error code
      (invalid_grant) from your logs means, and how to fix it; offline.

  obo-native demo
      Runs the embedded mock identity provider (no network needed) and shows
      a first exchange, a cache hit, 1 000 concurrent calls coalesced into one
      request, a retried 503, a throttled key and the stats() table.

  obo-native --version

Exit codes: 0 success, 1 exchange refused, 2 bad usage.
`;

async function main(argv) {
  const [command, ...rest] = argv;
  switch (command) {
    case 'exchange':
      return require('./cli/exchange.js').exchange(rest);
    case 'explain':
      return require('./cli/code.js').explainCommand(rest);
    case 'demo':
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write('Usage: obo-native demo\n\nRuns the embedded mock identity provider on loopback and shows what obo-native does.\n');
        return 0;
      }
      if (rest.length > 0) return usage(`demo takes no arguments (got ${rest[0]})`);
      return require('./cli/demo.js').demo();
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP);
      return command === undefined ? 2 : 0;
    case '--version':
    case '-v':
    case 'version':
      process.stdout.write(`${require('./package.json').version}\n`);
      return 0;
    default:
      return usage(`unknown command "${command}"`);
  }
}

function usage(message) {
  process.stderr.write(`obo-native: ${message}\nRun "obo-native --help" for usage.\n`);
  return 2;
}

/**
 * A reader that goes away (`obo-native demo | head`) is not a failure: there
 * is no one left to tell anything, so the CLI ends quietly instead of
 * crashing on an unhandled EPIPE.
 */
function endQuietlyWhenTheReaderLeaves(stream) {
  stream.on('error', (err) => {
    if (err && err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    process.exitCode = 1;
  });
}

if (require.main === module) {
  endQuietlyWhenTheReaderLeaves(process.stdout);
  endQuietlyWhenTheReaderLeaves(process.stderr);
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`obo-native: unexpected failure: ${err && err.stack ? err.stack : err}\n`);
      process.exitCode = 1;
    },
  );
}

module.exports = { main };
