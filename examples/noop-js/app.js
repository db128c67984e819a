// A no-op handler: acknowledges every event (what `benches/polyglot.rs` times).
const OK = { tag: 'ok' };

export const handler = {
  handle(_batch, events) {
    return events.map(() => OK);
  },
};
