// The plugin: every `video.watched` event stored as a document in `watch_history`, in one
// `bulk-write` per call whatever the number of events and partitions it carries.
import { bulkWrite, upsert } from 'polyhost:platform/documents@0.2.0';
import { get } from 'wasi:config/store@0.2.0-rc.1';

import { Malformed, parseView, record } from './history.js';

function collection() {
  try {
    return get('collection') ?? 'watch_history';
  } catch {
    return 'watch_history';
  }
}

// A host call's `error` arrives as the thrown value's `payload`.
function hostError(e) {
  return e.payload ?? { message: String(e), transient: false };
}

function failed(error) {
  return error.transient ? { tag: 'retry', val: error.message } : { tag: 'reject', val: error.message };
}

// `json-partitions-handler`: the call's events arrive as one JSON array with one array per
// partition (see `wit/deps/platform/handler.wit`); one list of outcomes goes back per
// partition.
export const jsonPartitionsHandler = {
  handle(_partitions, events) {
    const target = collection();
    const outcomes = [];
    const writes = []; // [partition, event index, { filter, doc }]
    JSON.parse(events).forEach((partition, p) => {
      outcomes.push(
        partition.map((event, i) => {
          if (event.type !== 'video.watched') {
            return { tag: 'ok' };
          }
          try {
            writes.push([p, i, record(event.id, event.time, parseView(event))]);
            return { tag: 'ok' };
          } catch (e) {
            if (e instanceof Malformed) {
              return { tag: 'reject', val: e.message };
            }
            throw e;
          }
        }),
      );
    });
    if (writes.length === 0) {
      return outcomes;
    }
    const ops = writes.map(([, , { filter, doc }]) => ({
      tag: 'replace',
      val: { filter, replacement: doc, upsert: true },
    }));
    try {
      bulkWrite(target, ops, false);
    } catch (e) {
      const error = hostError(e);
      // A transient failure: every write is retried. Anything else: each write alone, so
      // only the event at fault is rejected.
      for (const [p, i, { filter, doc }] of writes) {
        if (error.transient) {
          outcomes[p][i] = failed(error);
          continue;
        }
        try {
          upsert(target, filter, doc);
        } catch (e) {
          outcomes[p][i] = failed(hostError(e));
        }
      }
    }
    return outcomes;
  },
};
