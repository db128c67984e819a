import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Malformed, parseView, record } from './history.js';

// An event as the batch's JSON text carries it: `data` parsed, or `data_base64`.
const event = (data) => JSON.parse(JSON.stringify({ id: 'e-1', type: 'video.watched', offset: 0, data }));

test('a view is parsed', () => {
  assert.deepEqual(parseView(event({ user: 'u1', video: 'v9', seconds: 42 })), {
    user: 'u1',
    video: 'v9',
    seconds: 42,
  });
});

test('a malformed view is refused with the reason', () => {
  const cases = [
    [[1, 2], /not a JSON object/],
    [null, /not a JSON object/],
    ['text', /not a JSON object/],
    [{ video: 'v', seconds: 1 }, /`user`/],
    [{ user: 'u', seconds: 1 }, /`video`/],
    [{ user: 'u', video: 'v', seconds: 1.5 }, /`seconds`/],
    [{ user: 'u', video: 'v', seconds: -1 }, /`seconds`/],
  ];
  for (const [data, reason] of cases) {
    assert.throws(() => parseView(event(data)), (e) => e instanceof Malformed && reason.test(e.message));
  }
  // Data that is not JSON arrives as `data_base64`.
  const bytes = { id: 'e-2', type: 'video.watched', offset: 1, data_base64: '//4=' };
  assert.throws(() => parseView(bytes), (e) => e instanceof Malformed && /not JSON/.test(e.message));
});

test('a view is stored under its event id, so a replay rewrites it', () => {
  const view = { user: 'u1', video: 'v9', seconds: 42 };
  const a = record('e-1', 1700000000000000, view);
  assert.deepEqual(JSON.parse(a.filter), { _id: 'e-1' });
  assert.deepEqual(JSON.parse(a.doc), { user: 'u1', video: 'v9', seconds: 42, at: 1700000000000000 });
  assert.deepEqual(record('e-1', 1700000000000000, view), a);
  assert.equal(JSON.parse(record('e-2', undefined, view).doc).at, null);
});
