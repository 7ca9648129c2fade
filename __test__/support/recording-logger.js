'use strict';
/**
 * A logger for tests that keeps every argument of every call, and writes each
 * call out as a host's logger could: an Error with its name, message, stack,
 * every own property and its cause, deeply. A secret in any argument then
 * shows in the text, whichever argument or property it hides in.
 */
const LEVELS = ['debug', 'info', 'warn', 'error'];

/** `value` as text; objects (Errors among them) with every own property, and an Error's cause. */
function serialise(value, seen = new Set()) {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return String(value);
  if (seen.has(value)) return '[seen]';
  seen.add(value);
  const names = new Set(Object.getOwnPropertyNames(value));
  if (value instanceof Error) for (const name of ['name', 'message', 'stack', 'cause']) names.add(name);
  const fields = [...names].map((name) => {
    try {
      return `${name}: ${serialise(value[name], seen)}`;
    } catch {
      // A throwing getter must not make the call go unrecorded (the package swallows a logger's throw).
      return `${name}: [throws]`;
    }
  });
  return `{${fields.join(', ')}}`;
}

/** `calls` holds `{ level, args, text }` per call, `text` written when the call was made. */
function recordingLogger() {
  const calls = [];
  const logger = {};
  for (const level of LEVELS) {
    logger[level] = (...args) => {
      calls.push({ level, args, text: `${level} ${args.map((arg) => serialise(arg)).join(' ')}` });
    };
  }
  return { logger, calls, texts: () => calls.map((call) => call.text) };
}

module.exports = { recordingLogger, serialise };
