//! The stream: numbering, the simulated clock, and each event wrapped as a CloudEvent in a
//! Kafka message.

use serde::Serialize;
use serde_json::Value;

use crate::model::{Event, World};
use crate::polyhost::platform::messaging::Message;
use crate::rng::Rng;

/// The simulated clock's start: 2026-01-01T00:00:00.000Z, in ms since the Unix epoch.
pub const START_MS: i64 = 1_767_225_600_000;
/// The CloudEvents `source` of every generated event.
pub const SOURCE: &str = "/polyhost/event-generator";
/// The record header that marks a structured-mode CloudEvent.
pub const CONTENT_TYPE: (&str, &str) = ("content-type", "application/cloudevents+json");

/// The generator's settings (from `wasi:config/store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Seeds everything; the same seed gives the same messages.
    pub seed: u64,
    /// How many events the run has; 0 means endless.
    pub total: u64,
}

/// A run: the state, the random numbers and the clock, advanced one event at a time so the
/// messages do not depend on how many the host asks for at once.
#[derive(Debug)]
pub struct Stream {
    settings: Settings,
    /// Events produced so far.
    produced: u64,
    /// The simulated time of the next event, ms since the Unix epoch.
    clock_ms: i64,
    rng: Rng,
    world: World,
}

/// A CloudEvent 1.0 in JSON structured mode.
#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'static str,
    #[serde(rename = "type")]
    ty: &'a str,
    subject: &'a str,
    time: &'a str,
    datacontenttype: &'static str,
    data: &'a Value,
}

impl Stream {
    /// A new run with these settings.
    pub fn new(settings: Settings) -> Self {
        Stream {
            settings,
            produced: 0,
            clock_ms: START_MS,
            rng: Rng::new(settings.seed),
            world: World::new(settings.seed),
        }
    }

    /// The next event of the run with its number (from 1) and time, or `None` once `total`
    /// events were produced.
    pub fn next_event(&mut self) -> Option<(u64, i64, Event)> {
        if self.settings.total != 0 && self.produced >= self.settings.total {
            return None;
        }
        self.produced += 1;
        let now = self.clock_ms;
        let event = self.world.step(&mut self.rng, now);
        self.clock_ms += self.rng.range(1_000, 30_000) as i64;
        Some((self.produced, now, event))
    }

    /// The next message of the run, or `None` once `total` events were produced.
    pub fn next_message(&mut self) -> Option<Message> {
        let (n, time, event) = self.next_event()?;
        Some(message(self.settings.seed, n, time, &event))
    }

    /// Up to `max` next messages; empty once the run is over.
    pub fn next_batch(&mut self, max: u32) -> Vec<Message> {
        std::iter::from_fn(|| self.next_message())
            .take(max as usize)
            .collect()
    }
}

/// Event `n` of the run seeded `seed`, at `time_ms`, as a Kafka message: keyed by the subject,
/// the CloudEvent JSON as the value.
pub fn message(seed: u64, n: u64, time_ms: i64, event: &Event) -> Message {
    let id = format!("evt-{seed}-{n}");
    let time = rfc3339_millis(time_ms);
    let cloud_event = CloudEvent {
        specversion: "1.0",
        id: &id,
        source: SOURCE,
        ty: event.ty,
        subject: &event.subject,
        time: &time,
        datacontenttype: "application/json",
        data: &event.data,
    };
    Message {
        topic: event.topic.to_string(),
        key: Some(event.subject.clone().into_bytes()),
        value: serde_json::to_vec(&cloud_event).expect("a CloudEvent serialises"),
        headers: vec![(
            CONTENT_TYPE.0.to_string(),
            CONTENT_TYPE.1.as_bytes().to_vec(),
        )],
    }
}

/// `ms` since the Unix epoch (not before it) as RFC 3339 UTC with milliseconds,
/// e.g. `2026-01-01T00:00:00.000Z`.
pub fn rfc3339_millis(ms: i64) -> String {
    polyhost_guest::time::rfc3339_millis(ms.saturating_mul(1000)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_millis() {
        assert_eq!(rfc3339_millis(START_MS), "2026-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        // 2028-02-29T23:59:59.999Z: a leap day.
        assert_eq!(
            rfc3339_millis(1_835_481_599_999),
            "2028-02-29T23:59:59.999Z"
        );
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
