'use strict';
/**
 * The public types: __test__/types/check.ts imports the package by its own
 * name (through `exports`, module nodenext) and is compiled with
 * `tsc --noEmit`. Its `@ts-expect-error` lines prove that wrong uses are
 * rejected: tsc fails if one of them compiles.
 */
const { execFile } = require('node:child_process');
const path = require('node:path');
const { promisify } = require('node:util');

const run = promisify(execFile);
const ROOT = path.join(__dirname, '..');
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

jest.setTimeout(120_000);

it('index.d.ts, librechat.d.ts and testing.d.ts pass tsc --noEmit (strict) with check.ts', async () => {
  const result = await run(process.execPath, [TSC, '--noEmit', '-p', path.join('__test__', 'types', 'tsconfig.json')], { cwd: ROOT }).then(
    (done) => ({ code: 0, output: `${done.stdout}${done.stderr}` }),
    (err) => ({ code: err.code, output: `${err.stdout}${err.stderr}` }),
  );
  expect(result.output).toBe('');
  expect(result.code).toBe(0);
});
