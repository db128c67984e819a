// The watch history's rules, free of any host binding so `node --test` can run them.
//
// An event `video.watched` carries `{"user": "u1", "video": "v9", "seconds": 42}`. It is
// stored as one document per event, keyed by the event id, so a replay rewrites the same
// document instead of adding another.
//
// Events are the objects of the call's JSON text (`json-partitions-handler`): `data` is the
// event's JSON data, already parsed; data that is not JSON comes as `data_base64` instead.

/** The event can never be applied: it goes to the dead-letter topic. */
export class Malformed extends Error {}

/** The view an event carries, or `Malformed` with the reason. */
export function parseView(event) {
  if (!('data' in event)) {
    throw new Malformed('data is not JSON');
  }
  const doc = event.data;
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new Malformed('data is not a JSON object');
  }
  const { user, video, seconds } = doc;
  if (typeof user !== 'string' || user === '') {
    throw new Malformed('`user` must be a non-empty string');
  }
  if (typeof video !== 'string' || video === '') {
    throw new Malformed('`video` must be a non-empty string');
  }
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > 86400) {
    throw new Malformed('`seconds` must be an integer between 0 and 86400');
  }
  return { user, video, seconds };
}

/** The filter and document stored for one event (the filter is the event id). */
export function record(eventId, time, view) {
  return {
    filter: JSON.stringify({ _id: eventId }),
    doc: JSON.stringify({
      user: view.user,
      video: view.video,
      seconds: view.seconds,
      // Microseconds since the epoch, when the producer set it (absent otherwise).
      at: time ?? null,
    }),
  };
}
