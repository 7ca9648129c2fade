'use strict';
/**
 * `obo-native explain <code>`: what an AADSTS number or an OAuth error code
 * from LibreChat's logs means, and how to fix it, offline. An administrator
 * holding only a log line should not need credentials or an exchange to
 * learn that AADSTS65001 is missing consent.
 */
const { explainCode } = require('./explain.js');
const { palette, wrap } = require('./ui.js');

const EXIT_OK = 0;
const EXIT_UNKNOWN = 1;
const EXIT_USAGE = 2;

const HELP = `Usage: obo-native explain <code> [--json]

Explains, offline, an error code from an On-Behalf-Of refusal (for example
from LibreChat's logs) and how to fix it:
  an AADSTS number     obo-native explain AADSTS65001   (or just 65001)
  an OAuth error code  obo-native explain invalid_grant

Exit codes: 0 explained, 1 a code obo-native does not know, 2 bad usage.
`;

function explainCommand(args, { out = process.stdout, errOut = process.stderr } = {}) {
  if (args.includes('--help') || args.includes('-h')) {
    out.write(HELP);
    return EXIT_OK;
  }
  const json = args.includes('--json');
  const rest = args.filter((arg) => arg !== '--json');
  if (rest.length !== 1 || rest[0].startsWith('-')) {
    const why = rest.length === 0 ? 'explain needs a code' : `explain takes one code (got ${rest.join(' ')})`;
    errOut.write(`obo-native explain: ${why}\n${HELP}`);
    return EXIT_USAGE;
  }
  const explanation = explainCode(rest[0]);
  if (explanation === null) {
    errOut.write(`obo-native explain: "${rest[0]}" is neither an AADSTS number (AADSTS65001, 65001) nor an OAuth error code (invalid_grant)\n`);
    return EXIT_USAGE;
  }
  const { known, code, title, meaning, fix } = explanation;
  if (json) {
    out.write(`${JSON.stringify({ known, code, title, meaning, fix }, null, 2)}\n`);
  } else {
    const c = palette(out);
    const lines = [c.bold(title), '', c.bold('What it means:'), `  ${wrap(meaning, 86, '  ')}`, c.bold('How to fix it:')];
    for (const line of fix) lines.push(`  • ${wrap(line, 84, '    ')}`);
    out.write(`${lines.join('\n')}\n`);
  }
  return known ? EXIT_OK : EXIT_UNKNOWN;
}

module.exports = { explainCommand, HELP };
