//! S2.3 ranking-handler: sessions, cache, leaderboards, rankings and variables → Redis.
//!
//! For now it acknowledges every event; the domain logic comes with the platform.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};

struct RankingHandler;

impl Guest for RankingHandler {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events.iter().map(|_| Outcome::Ok).collect()
    }
}

export!(RankingHandler);
