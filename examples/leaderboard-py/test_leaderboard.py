import json

import pytest

from leaderboard import Malformed, Score, board_key, parse_score, writes


def data(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_a_score_is_parsed():
    assert parse_score(data(board="weekly", player="ana", points=10)) == Score("weekly", "ana", 10.0)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (data(player="ana", points=1), "`board`"),
        (data(board="a:b", player="ana", points=1), "`board`"),
        (data(board="weekly", points=1), "`player`"),
        (data(board="weekly", player="ana", points="ten"), "`points`"),
        (data(board="weekly", player="ana", points=True), "`points`"),
        (data(board="weekly", player="ana", points=-1), "between"),
    ],
)
def test_a_malformed_score_is_refused_with_the_reason(raw, reason):
    with pytest.raises(Malformed, match=reason):
        parse_score(raw)


def test_a_score_adds_to_the_board_and_counts_the_event():
    assert board_key("lb:", "weekly") == "lb:weekly"
    assert writes("lb:", Score("weekly", "ana", 3.0)) == [
        ("zincr-by", "lb:weekly", "ana", 3.0),
        ("incr-by", "lb:weekly:events", 1),
    ]
