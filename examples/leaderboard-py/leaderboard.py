"""The leaderboard's rules, free of any host binding so pytest can run them natively.

An event `game.score` carries `{"board": "weekly", "player": "ana", "points": 10}`. It adds
the points to the player's score on the board's sorted set and counts the board's events.
"""

import json
from dataclasses import dataclass


class Malformed(ValueError):
    """The event can never be applied: it goes to the dead-letter topic."""


@dataclass(frozen=True)
class Score:
    board: str
    player: str
    points: float


def parse_score(data: bytes) -> Score:
    """The score an event's data carries, or `Malformed` with the reason."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise Malformed(f"data is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise Malformed("data is not a JSON object")
    board, player, points = doc.get("board"), doc.get("player"), doc.get("points")
    if not isinstance(board, str) or not board or ":" in board:
        raise Malformed("`board` must be a non-empty string without `:`")
    if not isinstance(player, str) or not player:
        raise Malformed("`player` must be a non-empty string")
    if isinstance(points, bool) or not isinstance(points, (int, float)):
        raise Malformed("`points` must be a number")
    if points < 0 or points > 1_000_000:
        raise Malformed("`points` must be between 0 and 1000000")
    return Score(board, player, float(points))


def board_key(prefix: str, board: str) -> str:
    """The sorted set holding a board's scores."""
    return f"{prefix}{board}"


def writes(prefix: str, score: Score) -> list[tuple]:
    """The Redis writes one score makes, as `(command, args...)`."""
    key = board_key(prefix, score.board)
    return [
        ("zincr-by", key, score.player, score.points),
        ("incr-by", f"{key}:events", 1),
    ]
