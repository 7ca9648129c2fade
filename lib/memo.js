'use strict';
/**
 * A thread's memo of hot tokens, so that a cache hit costs no call into Rust
 * and no string conversion. It only mirrors what the native cache holds: each
 * entry records the generation counters it was made under (an epoch that moves
 * on `configure`/`clearCache`, and a per-bucket generation that moves when
 * Rust replaces or evicts an entry), and is valid while both are unchanged and
 * its serve-until time (wall clock) is ahead.
 *
 * Entries are found by subject and scopes; an entry answers only a call with
 * the same tenant, issuer, assertion and target (a token-exchange call's own
 * audiences and resources, as text; '' for none). The assertion is compared with the
 * caller's string (a reference to the string the memo was filled with, never
 * copied or sent anywhere): hashing it in JavaScript would cost microseconds
 * per call, and the native cache keys by its SHA-256. A call with a rotated
 * assertion or another tenant goes to the native cache, which keys by all of
 * them, and its hit replaces the entry.
 */
class Memo {
  /**
   * @param {Uint32Array} generations the counters Rust keeps current for this thread
   * @param {number} limit entries at most; past it the memo starts again
   */
  constructor(generations, limit) {
    this.generations = generations;
    this.limit = limit;
    /**
     * subject → its entry, or, for a subject with tokens for several scopes,
     * a `Map` scopes → entry. Most users have one: a `Map` per user would
     * cost ~180 bytes per entry, more than the entry itself.
     */
    this.bySubject = new Map();
    this.size = 0;
    /** The wall-clock time (ms) the last `get` that found an entry judged it by. */
    this.now = 0;
  }

  /**
   * The valid entry for this call, or undefined. Stale entries are dropped.
   * `now` (ms) defaults to the wall clock, read only when an entry is found:
   * `Date.now()` costs ~70 ns, which each of a fan-out's thousands of
   * callers (none of them a memo hit) would otherwise pay.
   */
  get(subject, scopes, tenant, issuer, assertion, now = undefined, target = '') {
    const held = this.bySubject.get(subject);
    if (held === undefined) return undefined;
    const entry = held instanceof Map ? held.get(scopes) : held.scopes === scopes ? held : undefined;
    if (entry === undefined) return undefined;
    const at = (this.now = now === undefined ? Date.now() : now);
    const generations = this.generations;
    if (generations[0] !== entry.epoch || generations[entry.slot] !== entry.generation || at >= entry.serveUntil) {
      this.drop(subject, held, scopes);
      return undefined;
    }
    if (entry.assertion !== assertion || entry.tenant !== tenant || entry.issuer !== issuer || entry.target !== target) {
      return undefined;
    }
    return entry;
  }

  /** Remembers a native hit for this call. */
  remember(subject, scopes, tenant, issuer, assertion, hit, target = '') {
    const entry = {
      scopes,
      tenant,
      issuer,
      assertion,
      target,
      token: hit.accessToken,
      granted: hit.granted,
      serveUntil: hit.serveUntilMs,
      expiresAt: hit.expiresAtMs,
      epoch: hit.epoch,
      slot: hit.slot,
      generation: hit.generation,
    };
    let held = this.bySubject.get(subject);
    const replaces = held !== undefined && (held instanceof Map ? held.has(scopes) : held.scopes === scopes);
    if (!replaces) {
      if (this.size >= this.limit) {
        this.clear();
        held = undefined;
      }
      this.size++;
    }
    if (held === undefined || (!(held instanceof Map) && held.scopes === scopes)) {
      this.bySubject.set(subject, entry);
    } else if (held instanceof Map) {
      held.set(scopes, entry);
    } else {
      this.bySubject.set(subject, new Map([[held.scopes, held], [scopes, entry]]));
    }
  }

  /** Drops one entry, and its subject when that was the last one. */
  drop(subject, held, scopes) {
    this.size--;
    if (held instanceof Map) {
      held.delete(scopes);
      if (held.size > 0) return;
    }
    this.bySubject.delete(subject);
  }

  clear() {
    this.bySubject = new Map();
    this.size = 0;
  }

  /** Subjects with at least one entry (each has one). */
  get subjects() {
    return this.bySubject.size;
  }
}

module.exports = { Memo };
