// A no-op handler: acknowledges every event (what `benches/polyglot.rs` times). It takes
// the batch as one JSON text (`json-handler`), parsed in one `JSON.parse`.
const OK = { tag: 'ok' };

export const jsonHandler = {
  handle(_batch, events) {
    return JSON.parse(events).map(() => OK);
  },
};
