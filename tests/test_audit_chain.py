"""Tamper evidence: every kind of tampering is detected and located (chain id + seq), on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from tests.test_audit_store import ENGINES, fill, fresh_store, rec
from workjet_fast._workjet_fast import chain_hashes
from workjet_fast.audit.chain import GENESIS, Chain, make_checkpoint, row_hash, verify
from workjet_fast.audit.store import AuditStore

KEY = "checkpoint-secret"


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    with fresh_store(request.param, tmp_path) as s:
        yield s


def chained(store: AuditStore, n: int = 20, chain_id: str = "chain-a") -> Chain:
    chain = fill(store, n, chain_id)
    store.add_checkpoint(make_checkpoint(KEY, chain_id, n, "periodic", chain.head, 1_700_000_100.0))
    return chain


def where(store: AuditStore) -> list[tuple[str, str, int | None]]:
    return [(p.kind, p.chain_id, p.seq) for p in verify(store, KEY).problems]


def test_rows_link_from_genesis() -> None:
    rows = Chain("c").link([rec(0), rec(1)])
    assert rows[0].prev_hash == GENESIS and rows[1].prev_hash == rows[0].hash
    assert rows[1].hash == row_hash("c", 2, rows[0].hash, rows[1].record)


def test_intact_chains_verify(store: AuditStore) -> None:
    chained(store, 20, "chain-a")
    chained(store, 7, "chain-b")
    report = verify(store, KEY)
    assert report.ok, report.problems
    assert (report.chains, report.rows, report.checkpoints) == (2, 27, 2)


def test_modified_record(store: AuditStore) -> None:
    chained(store)
    text = store.db.query("SELECT record FROM audit_log WHERE chain_id = 'chain-a' AND seq = 7")[0][0]
    forged = orjson.loads(text) | {"prompt_tokens": 1}
    store.db.execute(
        "UPDATE audit_log SET record = ? WHERE chain_id = 'chain-a' AND seq = 7", (orjson.dumps(forged).decode(),)
    )
    assert where(store) == [("modified", "chain-a", 7)]


def test_modified_indexed_column(store: AuditStore) -> None:
    chained(store)
    store.db.execute("UPDATE audit_log SET status = 200 WHERE chain_id = 'chain-a' AND seq = 11")  # was 429
    assert where(store) == [("modified", "chain-a", 11)]


def test_modified_and_rehashed_row_breaks_the_next_link(store: AuditStore) -> None:
    chained(store)
    prev, text = store.db.query("SELECT prev_hash, record FROM audit_log WHERE chain_id = 'chain-a' AND seq = 5")[0]
    text = text.replace('"status":200', '"status":201')
    store.db.execute(
        "UPDATE audit_log SET record = ?, status = 201, hash = ? WHERE chain_id = 'chain-a' AND seq = 5",
        (text, row_hash("chain-a", 5, prev, text)),
    )
    assert where(store) == [("inserted", "chain-a", 6)]


def test_deleted_record(store: AuditStore) -> None:
    chained(store)
    store.db.execute("DELETE FROM audit_log WHERE chain_id = 'chain-a' AND seq IN (9, 10)")
    assert where(store) == [("deleted", "chain-a", 9)]


def test_deleted_first_records(store: AuditStore) -> None:
    chained(store)
    store.db.execute("DELETE FROM audit_log WHERE chain_id = 'chain-a' AND seq = 1")
    assert where(store) == [("deleted", "chain-a", 1)]


def test_deleted_tail_below_a_checkpoint(store: AuditStore) -> None:
    chained(store)
    store.db.execute("DELETE FROM audit_log WHERE chain_id = 'chain-a' AND seq > 17")
    assert where(store) == [("deleted", "chain-a", 18)]


def test_deleted_whole_chain_with_a_checkpoint(store: AuditStore) -> None:
    chained(store, 20, "chain-a")
    chained(store, 5, "chain-b")
    store.db.execute("DELETE FROM audit_log WHERE chain_id = 'chain-b'")
    assert where(store) == [("deleted", "chain-b", 1)]


def test_inserted_record(store: AuditStore) -> None:
    chained(store)
    # Slip a forged record in at seq 8: shift the later rows up by one and link the new row to row 7.
    store.db.execute("UPDATE audit_log SET seq = seq + 1000 WHERE chain_id = 'chain-a' AND seq >= 8")
    store.db.execute("UPDATE audit_log SET seq = seq - 999 WHERE chain_id = 'chain-a' AND seq >= 1008")
    prev = store.db.query("SELECT hash FROM audit_log WHERE chain_id = 'chain-a' AND seq = 7")[0][0]
    forged = Chain("chain-a")
    forged.seq, forged.head = 7, prev
    row = forged.link([rec(999)])[0]
    store.insert([row])
    problems = where(store)
    assert problems[0] == ("inserted", "chain-a", 9)  # the old row 8 no longer links to its predecessor
    assert all(p[1] == "chain-a" and p[2] is not None and p[2] >= 9 for p in problems)


def test_inserted_record_in_a_new_chain_is_reported_if_it_does_not_start_at_genesis(store: AuditStore) -> None:
    chained(store)
    chain = Chain("intruder")
    chain.seq, chain.head = 41, "ab" * 32
    store.insert(chain.link([rec(1)]))
    assert where(store) == [("deleted", "intruder", 1)]


def test_forged_checkpoint(store: AuditStore) -> None:
    chained(store)
    store.db.execute("UPDATE audit_checkpoints SET head_hash = ? WHERE chain_id = 'chain-a'", ("cd" * 32,))
    assert where(store) == [("checkpoint", "chain-a", 20)]


def test_unsigned_checkpoint_is_rejected_when_a_key_is_configured(store: AuditStore) -> None:
    chain = fill(store, 3)
    store.add_checkpoint(make_checkpoint("", "chain-a", 3, "periodic", chain.head, 1.0))
    assert where(store) == [("checkpoint", "chain-a", 3)]
    assert verify(store, "").ok


def test_signed_checkpoint_without_the_key_is_a_warning(store: AuditStore) -> None:
    chained(store)
    report = verify(store, "")
    assert report.ok and len(report.warnings) == 1


def test_pruned_chain_still_detects_tampering(store: AuditStore) -> None:
    chained(store)
    assert store.prune(older_than=1_700_000_010.0, key=KEY) == 10
    assert where(store) == []
    store.db.execute("DELETE FROM audit_log WHERE chain_id = 'chain-a' AND seq = 11")
    assert where(store) == [("deleted", "chain-a", 11)]


def test_forged_anchor_is_detected(store: AuditStore) -> None:
    chained(store)
    store.prune(older_than=1_700_000_010.0, key=KEY)
    store.db.execute("UPDATE audit_checkpoints SET seq = 9 WHERE kind = 'anchor'")
    problems = where(store)
    assert ("checkpoint", "chain-a", 9) in problems


@pytest.mark.parametrize("n", [1, 2, 50])
def test_chain_lengths(store: AuditStore, n: int) -> None:
    chained(store, n)
    assert verify(store, KEY).rows == n and verify(store, KEY).ok


@given(
    st.text(min_size=1, max_size=40),
    st.integers(min_value=0, max_value=2**63),
    st.lists(st.text(max_size=300), max_size=6),
)
@settings(max_examples=200)
def test_the_writers_batch_hashes_are_row_hash_one_by_one(chain_id: str, seq: int, texts: list[str]) -> None:
    texts = [t.encode("utf-8", "replace").decode() for t in texts]  # the record texts are valid UTF-8
    chain_id = chain_id.encode("utf-8", "replace").decode()
    prev = GENESIS
    expected = []
    for i, text in enumerate(texts):
        prev = row_hash(chain_id, seq + 1 + i, prev, text)
        expected.append(prev)
    assert chain_hashes(chain_id, seq + 1, GENESIS, texts) == expected


def cols(request_id: str) -> tuple[str, float, None, None, None, None, int]:
    return (request_id, 1.0, None, None, None, None, 200)


def test_a_batch_that_cannot_be_hashed_leaves_the_chain_as_it_was() -> None:
    chain = Chain("c")
    chain.link([rec(0)])
    mark = chain.seq, chain.head
    with pytest.raises(UnicodeEncodeError):
        chain.link_prepared([(cols("r1"), "{}"), (cols("r2"), "\ud800")])  # a lone surrogate: not UTF-8
    assert (chain.seq, chain.head) == mark
    assert chain.link([rec(1)])[0].prev_hash == mark[1]
