'use strict';
/**
 * The forms a secret can be echoed back in (as sent in a form body,
 * percent-encoded, in an `Authorization: Basic` value), and a search for any
 * of them: the redaction suites look for every form, not only the plain text.
 */

/** Every form a secret may be echoed in. */
function formsOf(secret) {
  const form = new URLSearchParams({ x: secret }).toString().slice(2);
  const percent = encodeURIComponent(secret);
  const strict = percent.replace(/[!'()*~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const forms = new Set([secret, form, percent, strict, form.replace(/\+/g, '%20')]);
  for (const text of [...forms]) forms.add(text.replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()));
  return [...forms];
}

/** The `Authorization: Basic` value the package sends (RFC 6749 §2.3.1), and the plain one. */
function basicValues(id, secret) {
  const form = (text) => new URLSearchParams({ x: text }).toString().slice(2);
  return [
    Buffer.from(`${form(id)}:${form(secret)}`).toString('base64'),
    Buffer.from(`${id}:${secret}`).toString('base64'),
  ];
}

/** The texts that contain any form of any secret. */
function leaksIn(texts, secrets) {
  const leaks = [];
  for (const text of texts) {
    for (const secret of secrets) if (text.includes(secret)) leaks.push({ secret, text });
  }
  return leaks;
}

module.exports = { formsOf, basicValues, leaksIn };
