"""Entry serialization for the shared tier: a round trip, and corrupt bytes never load."""

from __future__ import annotations

import contextlib
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.cache.entry import MAGIC, Entry, EntryFormatError
from tests.edge.core_helpers import make_entry


def sample() -> Entry:
    e = make_entry(
        {"Cache-Control": "max-age=60", "ETag": '"v1"', "Vary": "Accept-Encoding"},
        request={"Accept-Encoding": "gzip"},
        body=b"\x00\xffbody",
    )
    e.tags = ("products", "static")
    return e


def test_round_trip() -> None:
    e = sample()
    data = e.dumps()
    assert data.startswith(MAGIC)
    assert Entry.loads(data) == e


def test_pickle_is_refused() -> None:
    """Bytes from the shared tier are never unpickled: a pickle is not an entry."""
    with pytest.raises(EntryFormatError):
        Entry.loads(pickle.dumps(sample()))


def corrupt(meta: object, body: bytes = b"") -> bytes:
    head = json.dumps(meta).encode()
    return MAGIC + len(head).to_bytes(4, "big") + head + body


def good_meta() -> dict[str, object]:
    data = sample().dumps()
    n = int.from_bytes(data[4:8], "big")
    meta: dict[str, object] = json.loads(data[8 : 8 + n])
    return meta


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"WE1\n",
        b"WE1\n\x00\x00",
        b"WE2\n\x00\x00\x00\x02{}",
        MAGIC + b"\x00\x00\x10\x00{}",  # length past the end
        MAGIC + b"\x00\x00\x00\x04\xff\xfe\xfd\xfc",  # not UTF-8
        MAGIC + b"\x00\x00\x00\x05[1,2]",
        corrupt({}),
        corrupt("[" * 100_000),
    ],
)
def test_corrupt_bytes(data: bytes) -> None:
    with pytest.raises(EntryFormatError):
        Entry.loads(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("k", 5),
        ("s", "200"),
        ("s", True),
        ("h", [["a"]]),
        ("h", 5),
        ("h", [["a", 1]]),
        ("rq", "1.0"),
        ("rs", None),
        ("v", {"a": "b"}),
        ("t", "tag"),
        ("i", 1),
        ("m", []),
        ("m", {"lifetime": "60"}),
    ],
)
def test_wrong_types_are_corrupt(field: str, value: object) -> None:
    meta = good_meta()
    meta[field] = value
    with pytest.raises(EntryFormatError):
        Entry.loads(corrupt(meta))


def test_missing_field_is_corrupt() -> None:
    meta = good_meta()
    del meta["rs"]
    with pytest.raises(EntryFormatError):
        Entry.loads(corrupt(meta))


text = st.text(max_size=20)
pair = st.tuples(text, text)
finite = st.floats(allow_nan=False, allow_infinity=False)


@given(
    key=text,
    status=st.integers(100, 599),
    headers=st.lists(pair, max_size=5).map(tuple),
    body=st.binary(max_size=64),
    rq=finite,
    rs=finite,
    vary=st.lists(pair, max_size=3).map(tuple),
    tags=st.lists(text, max_size=3).map(tuple),
    invalidated=st.booleans(),
    meta=st.dictionaries(text, finite, max_size=4),
)
def test_round_trip_property(
    key: str,
    status: int,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    rq: float,
    rs: float,
    vary: tuple[tuple[str, str], ...],
    tags: tuple[str, ...],
    invalidated: bool,
    meta: dict[str, float],
) -> None:
    e = Entry(key, status, headers, body, rq, rs, vary, tags, invalidated, meta)
    assert Entry.loads(e.dumps()) == e


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape(data: bytes) -> None:
    for candidate in (data, MAGIC + data):
        with contextlib.suppress(EntryFormatError):
            Entry.loads(candidate)
