"""The plugin: a Redis leaderboard, applied exactly once per event id."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv, logging, store, types

from leaderboard import Malformed, parse_score, writes

# How long an applied event id is remembered: longer than any replay window.
DEDUPE_TTL_MS = 7 * 24 * 3600 * 1000


def _command(write: tuple) -> kv.Command:
    if write[0] == "zincr-by":
        return kv.Command_ZincrBy((write[1], write[2], write[3]))
    if write[0] == "incr-by":
        return kv.Command_IncrBy((write[1], write[2]))
    raise AssertionError(write)


class Handler(exports.Handler):
    def handle(self, batch: types.BatchInfo, events: list[types.Event]) -> list[types.Outcome]:
        prefix = store.get("key_prefix") or "leaderboard:"
        outcomes: list[types.Outcome] = []
        for event in events:
            if event.type != "game.score":
                outcomes.append(types.Outcome_Ok())
                continue
            try:
                score = parse_score(event.data)
            except Malformed as e:
                outcomes.append(types.Outcome_Reject(str(e)))
                continue
            commands = [_command(w) for w in writes(prefix, score)]
            try:
                kv.apply_once(event.id, DEDUPE_TTL_MS, commands)
                outcomes.append(types.Outcome_Ok())
            except Err as e:
                error: types.Error = e.value
                logging.log(logging.Level.WARN, "leaderboard", error.message)
                if error.transient:
                    outcomes.append(types.Outcome_Retry(error.message))
                else:
                    outcomes.append(types.Outcome_Reject(error.message))
        return outcomes
