import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Malformed, parseView, record } from './history.js';

const bytes = (v) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));

test('a view is parsed', () => {
  assert.deepEqual(parseView(bytes({ user: 'u1', video: 'v9', seconds: 42 })), {
    user: 'u1',
    video: 'v9',
    seconds: 42,
  });
});

test('a malformed view is refused with the reason', () => {
  const cases = [
    ['{not json', /not JSON/],
    [[1, 2], /not a JSON object/],
    [{ video: 'v', seconds: 1 }, /`user`/],
    [{ user: 'u', seconds: 1 }, /`video`/],
    [{ user: 'u', video: 'v', seconds: 1.5 }, /`seconds`/],
    [{ user: 'u', video: 'v', seconds: -1 }, /`seconds`/],
  ];
  for (const [raw, reason] of cases) {
    assert.throws(() => parseView(bytes(raw)), (e) => e instanceof Malformed && reason.test(e.message));
  }
  assert.throws(() => parseView(new Uint8Array([0xff, 0xfe])), Malformed);
});

test('a view is stored under its event id, so a replay rewrites it', () => {
  const view = { user: 'u1', video: 'v9', seconds: 42 };
  const a = record('e-1', 1700000000000000n, view);
  assert.deepEqual(JSON.parse(a.filter), { _id: 'e-1' });
  assert.deepEqual(JSON.parse(a.doc), { user: 'u1', video: 'v9', seconds: 42, at: 1700000000000000 });
  assert.deepEqual(record('e-1', 1700000000000000n, view), a);
  assert.equal(JSON.parse(record('e-2', undefined, view).doc).at, null);
});
