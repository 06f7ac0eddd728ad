"""The first-byte timeline of the load benchmark (benches/load/firstbyte.py): joining stamps, the table."""

from __future__ import annotations

from benches.load.firstbyte import STAGES, _join, stage_table, tail_note


def _request(base: int) -> dict[str, int]:
    """Server stamps of one request whose bytes arrived at `base`: 1 µs per stage after the arrival."""
    names = [b for _, _, b in STAGES[1:-1]]  # "parsed" comes from the arrival, not from the request's marks
    return {name: base + 1000 * (i + 2) for i, name in enumerate(names) if name != "parsed"}


def test_join_matches_each_client_request_to_the_arrival_and_handler_after_its_write() -> None:
    marks = {
        # the second request's bytes arrived before the first request ended: still matched to the second
        "requests": [_request(10_000), _request(50_000)],
        "arrivals": [[10_000, 11_000], [50_000, 51_000]],
    }
    client = [[9_000, 40_000], [49_500, 90_000]]
    rows = _join(client, marks)
    assert [r["req_in"] for r in rows] == [10_000, 50_000]
    assert [r["client_write"] for r in rows] == [9_000, 49_500]
    assert rows[0]["parsed"] == 11_000 and rows[1]["handler"] == 50_000 + 1000 * 3


def test_join_drops_a_request_whose_first_byte_left_after_the_client_read() -> None:
    late = _request(10_000)
    late["first_out"] = 80_000
    rows = _join([[9_000, 40_000]], {"requests": [late], "arrivals": [[10_000, 11_000]]})
    assert rows == []


def test_table_has_every_stage_and_the_total_in_microseconds() -> None:
    rows = _join([[9_000, 40_000]], {"requests": [_request(10_000)], "arrivals": [[10_000, 11_000]]})
    table = stage_table({"on": rows})
    assert "| hop in | 1.0 | 1.0 |" in table  # 9,000 -> 10,000 ns
    assert "| parse | 1.0 | 1.0 |" in table
    for label, _, _ in STAGES:
        assert f"| {label} |" in table
    assert "| **client write to first byte** | 31.0 | 31.0 |" in table


def test_tail_note_tells_the_tail_and_whether_the_next_request_waited() -> None:
    first = {"handler": 1_000, "last_out": 10_000, "end": 14_000}
    second = {"handler": 13_000, "last_out": 20_000, "end": 22_000}
    note = tail_note({"requests": [first, second], "arrivals": [[500, 900], [12_000, 12_500]]})
    assert "ran 3.0 µs more" in note  # the median of 4 and 2 µs
    assert "in 100% of requests" in note  # the second arrived at 12,000, before the first ended at 14,000


def test_a_variant_with_off_among_its_parts_runs_with_features_off() -> None:
    from benches.load.ab import features_on

    assert features_on("on") and features_on("on+on") and features_on("nodlp+nolog")
    assert not features_on("off") and not features_on("off+off") and not features_on("nolog+off")
