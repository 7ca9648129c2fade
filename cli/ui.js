'use strict';
/** Small terminal helpers for the CLI and the demo: colours (only on a TTY, never with NO_COLOR), rows, durations. */

function useColor(stream) {
  if ('NO_COLOR' in process.env) return false;
  if (process.env.FORCE_COLOR && process.env.FORCE_COLOR !== '0') return true;
  return Boolean(stream && stream.isTTY);
}

function palette(stream) {
  const on = useColor(stream);
  const wrap = (open, close) => (text) => (on ? `\u001b[${open}m${text}\u001b[${close}m` : String(text));
  return {
    enabled: on,
    bold: wrap(1, 22),
    dim: wrap(2, 22),
    red: wrap(31, 39),
    green: wrap(32, 39),
    yellow: wrap(33, 39),
    cyan: wrap(36, 39),
  };
}

/** `label   value` rows, labels padded to one width; continuation lines indented. */
function rows(pairs, { indent = 2, width } = {}) {
  const labelWidth = width || Math.max(0, ...pairs.map(([label]) => label.length)) + 3;
  const pad = ' '.repeat(indent);
  return pairs
    .map(([label, value]) =>
      String(value)
        .split('\n')
        .map((line, i) => `${pad}${(i === 0 ? label : '').padEnd(labelWidth)}${line}`)
        .join('\n'),
    )
    .join('\n');
}

/** Milliseconds, readable at every scale: 0.004 ms, 4.2 ms, 312 ms, 2.1 s. */
function duration(ms) {
  if (ms < 0.01) return `${(ms * 1000).toFixed(1)} µs`;
  if (ms < 1) return `${ms.toFixed(3)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** 1000 → "1 000". */
function count(n) {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
}

/** Wraps `text` to `width` columns, each line after the first prefixed with `indent`. */
function wrap(text, width = 88, indent = '') {
  const words = String(text).split(/\s+/).filter(Boolean);
  const lines = [];
  let line = '';
  for (const word of words) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines.join(`\n${indent}`);
}

module.exports = { palette, rows, duration, count, wrap, useColor };
