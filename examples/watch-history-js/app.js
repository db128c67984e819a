// The plugin: every `video.watched` event stored as a document in `watch_history`.
import { upsert } from 'polyhost:platform/documents@0.2.0';
import { get } from 'wasi:config/store@0.2.0-rc.1';

import { Malformed, parseView, record } from './history.js';

function collection() {
  try {
    return get('collection') ?? 'watch_history';
  } catch {
    return 'watch_history';
  }
}

// `json-handler`: the batch's events arrive as one JSON array (see `wit/deps/platform/handler.wit`).
export const jsonHandler = {
  handle(_batch, events) {
    const target = collection();
    return JSON.parse(events).map((event) => {
      if (event.type !== 'video.watched') {
        return { tag: 'ok' };
      }
      let view;
      try {
        view = parseView(event);
      } catch (e) {
        if (e instanceof Malformed) {
          return { tag: 'reject', val: e.message };
        }
        throw e;
      }
      const { filter, doc } = record(event.id, event.time, view);
      try {
        upsert(target, filter, doc);
        return { tag: 'ok' };
      } catch (e) {
        // A host call's `error` arrives as the thrown value's `payload`.
        const error = e.payload ?? { message: String(e), transient: false };
        return error.transient
          ? { tag: 'retry', val: error.message }
          : { tag: 'reject', val: error.message };
      }
    });
  },
};
