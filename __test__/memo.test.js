'use strict';
/**
 * The per-thread memo on its own (lib/memo.js), driven with hand-made hits and
 * a hand-held generations array, so that its rules can be checked at a scale
 * (a million users) that exchanges through a provider could not reach.
 */
const { execFileSync } = require('node:child_process');
const path = require('node:path');
const { Memo } = require('../lib/memo.js');

const FAR = Date.now() + 3_600_000;

/** A native hit as `lookup` returns it. */
function hit(token, slot, generations, overrides = {}) {
  return {
    accessToken: token,
    granted: 3600,
    serveUntilMs: FAR,
    expiresAtMs: FAR + 30_000,
    epoch: generations[0],
    slot,
    generation: generations[slot],
    ...overrides,
  };
}

describe('memo', () => {
  it('answers only a call with the same subject, scopes, tenant, issuer and assertion', () => {
    const generations = new Uint32Array(8);
    const memo = new Memo(generations, 100);
    memo.remember('sub', 's', 'tenant-a', 'iss', 'assertion-1', hit('tok', 3, generations));
    const now = Date.now();
    expect(memo.get('sub', 's', 'tenant-a', 'iss', 'assertion-1', now).token).toBe('tok');
    expect(memo.get('sub', 's', 'tenant-a', 'iss', ['assertion', '1'].join('-'), now).token).toBe('tok');
    expect(memo.get('sub', 's', 'tenant-a', 'iss', 'assertion-2', now)).toBeUndefined();
    expect(memo.get('sub', 's', 'tenant-b', 'iss', 'assertion-1', now)).toBeUndefined();
    expect(memo.get('sub', 's', 'tenant-a', 'iss-b', 'assertion-1', now)).toBeUndefined();
    expect(memo.get('sub', 't', 'tenant-a', 'iss', 'assertion-1', now)).toBeUndefined();
    expect(memo.get('other', 's', 'tenant-a', 'iss', 'assertion-1', now)).toBeUndefined();
    // A mismatch is not staleness: the entry stays for its own caller.
    expect(memo.size).toBe(1);
  });

  it('drops an entry when its epoch or generation moves or its serve-until passes, and its subject with it', () => {
    const generations = new Uint32Array(8);
    const memo = new Memo(generations, 100);
    const args = ['sub', 's', 't', 'i', 'a'];
    memo.remember(...args, hit('tok', 5, generations));
    generations[5]++;
    expect(memo.get(...args, Date.now())).toBeUndefined();
    expect([memo.size, memo.subjects]).toEqual([0, 0]);

    memo.remember(...args, hit('tok', 5, generations));
    generations[0]++;
    expect(memo.get(...args, Date.now())).toBeUndefined();
    expect([memo.size, memo.subjects]).toEqual([0, 0]);

    memo.remember(...args, hit('tok', 5, generations, { serveUntilMs: 1000 }));
    expect(memo.get(...args, 999)).toBeDefined();
    expect(memo.get(...args, 1000)).toBeUndefined();
    expect([memo.size, memo.subjects]).toEqual([0, 0]);
  });

  it('keeps a subject while another of its scopes is still held', () => {
    const generations = new Uint32Array(8);
    const memo = new Memo(generations, 100);
    memo.remember('sub', 'one', 't', 'i', 'a', hit('tok-1', 1, generations));
    memo.remember('sub', 'two', 't', 'i', 'a', hit('tok-2', 2, generations));
    generations[1]++;
    expect(memo.get('sub', 'one', 't', 'i', 'a', Date.now())).toBeUndefined();
    expect([memo.size, memo.subjects]).toEqual([1, 1]);
    expect(memo.get('sub', 'two', 't', 'i', 'a', Date.now()).token).toBe('tok-2');
  });

  it('answers each scope of a subject its own token, whether the subject holds one scope or several', () => {
    const generations = new Uint32Array(8);
    const memo = new Memo(generations, 100);
    const now = Date.now();
    memo.remember('sub', 'one', 't', 'i', 'a', hit('tok-1', 1, generations));
    memo.remember('sub', 'one', 't', 'i', 'a', hit('tok-1b', 1, generations));
    expect([memo.size, memo.subjects]).toEqual([1, 1]);
    expect(memo.get('sub', 'two', 't', 'i', 'a', now)).toBeUndefined();
    memo.remember('sub', 'two', 't', 'i', 'a', hit('tok-2', 2, generations));
    memo.remember('sub', 'three', 't', 'i', 'a', hit('tok-3', 3, generations));
    expect([memo.size, memo.subjects]).toEqual([3, 1]);
    expect(['one', 'two', 'three'].map((scopes) => memo.get('sub', scopes, 't', 'i', 'a', now).token)).toEqual([
      'tok-1b',
      'tok-2',
      'tok-3',
    ]);
    generations[2]++;
    generations[3]++;
    expect(memo.get('sub', 'two', 't', 'i', 'a', now)).toBeUndefined();
    expect(memo.get('sub', 'three', 't', 'i', 'a', now)).toBeUndefined();
    expect(memo.get('sub', 'one', 't', 'i', 'a', now).token).toBe('tok-1b');
    generations[1]++;
    expect(memo.get('sub', 'one', 't', 'i', 'a', now)).toBeUndefined();
    expect([memo.size, memo.subjects]).toEqual([0, 0]);
  });

  it('reads the wall clock only for a subject it holds, and judges expiry by it', () => {
    const generations = new Uint32Array(8);
    const memo = new Memo(generations, 100);
    memo.remember('sub', 's', 't', 'i', 'a', hit('tok', 1, generations, { serveUntilMs: 5000 }));
    const clock = jest.spyOn(Date, 'now').mockReturnValue(4999);
    try {
      // A fan-out's callers miss the memo by the thousand: no clock read for them.
      expect(memo.get('someone-else', 's', 't', 'i', 'a')).toBeUndefined();
      expect(clock).not.toHaveBeenCalled();
      expect(memo.get('sub', 's', 't', 'i', 'a').token).toBe('tok');
      expect([clock.mock.calls.length, memo.now]).toEqual([1, 4999]);
      clock.mockReturnValue(5000);
      expect(memo.get('sub', 's', 't', 'i', 'a')).toBeUndefined();
      expect(memo.size).toBe(0);
    } finally {
      clock.mockRestore();
    }
  });

  it('starts again when full, and a replaced entry does not count twice', () => {
    const generations = new Uint32Array(8);
    const memo = new Memo(generations, 3);
    for (let i = 0; i < 3; i++) memo.remember(`u${i}`, 's', 't', 'i', 'a', hit('tok', 1, generations));
    memo.remember('u0', 's', 't', 'i', 'b', hit('tok-b', 1, generations));
    expect(memo.size).toBe(3);
    memo.remember('u9', 's', 't', 'i', 'a', hit('tok', 1, generations));
    expect([memo.size, memo.subjects]).toEqual([1, 1]);
  });

  it('leaves nothing behind for a million distinct users whose entries went stale (heap stays flat)', () => {
    // In a child with --expose-gc, so that heap readings follow a real collection.
    const script = `
      const { Memo } = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'memo.js'))});
      const generations = new Uint32Array(4098);
      const memo = new Memo(generations, 10000);
      const far = Date.now() + 3600000;
      const heap = () => { global.gc(); global.gc(); return process.memoryUsage().heapUsed; };
      const round = (from, to) => {
        for (let i = from; i < to; i++) {
          const slot = 1 + (i % 4096);
          memo.remember('user-' + i, 'api://scope', 't', 'i', 'assertion',
            { accessToken: 'token', granted: 3600, serveUntilMs: far, expiresAtMs: far, epoch: 0, slot, generation: generations[slot] });
          generations[slot]++;
          if (memo.get('user-' + i, 'api://scope', 't', 'i', 'assertion', Date.now()) !== undefined) throw new Error('stale entry served');
        }
      };
      round(0, 100000);
      const before = heap();
      round(100000, 1000000);
      const after = heap();
      process.stdout.write(JSON.stringify({ before, after, size: memo.size, subjects: memo.subjects }));
    `;
    const result = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' }));
    expect(result.size).toBe(0);
    expect(result.subjects).toBe(0);
    // 900 000 users more: an empty Map kept per user would be ~80 MB.
    expect(result.after - result.before).toBeLessThan(2 * 1024 * 1024);
  });
});
