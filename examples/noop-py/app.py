"""A no-op handler: acknowledges every event (what `benches/polyglot.rs` times)."""

from wit_world import exports
from wit_world.imports import types

_OK = types.Outcome_Ok()


class Handler(exports.Handler):
    def handle(self, batch: types.BatchInfo, events: list[types.Event]) -> list[types.Outcome]:
        return [_OK] * len(events)
