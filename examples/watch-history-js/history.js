// The watch history's rules, free of any host binding so `node --test` can run them.
//
// An event `video.watched` carries `{"user": "u1", "video": "v9", "seconds": 42}`. It is
// stored as one document per event, keyed by the event id, so a replay rewrites the same
// document instead of adding another.

/** The event can never be applied: it goes to the dead-letter topic. */
export class Malformed extends Error {}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** The view an event's data carries, or `Malformed` with the reason. */
export function parseView(data) {
  let doc;
  try {
    doc = JSON.parse(decoder.decode(data));
  } catch (e) {
    throw new Malformed(`data is not JSON: ${e.message}`);
  }
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
      // Microseconds since the epoch, when the producer set it.
      at: time === undefined || time === null ? null : Number(time),
    }),
  };
}
