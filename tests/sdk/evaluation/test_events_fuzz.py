"""Property-based fuzzing of events CSVs (issue 16): random headers, rows with any text
(quotes, commas, newlines, NULs, huge numbers, odd timestamps) and bytes that are not UTF-8.
``read_events`` either returns a log consistent with its report or raises a ProfileError;
nothing else ever escapes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from edgerec.sdk import ProfileError
from edgerec.sdk.evaluation.events import read_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

COLUMNS = ["user_id", "item_id", "event", "timestamp", "weight", "other"]
cells = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "u1", "i1", "view", "click", "purchase", "dismiss", "teleport",
                     "1e309", "-1", "0", "nan", "inf", "1700000000", "2026-12-04T10:00:00Z",
                     "2026-13-45", "9" * 400, "1e-400", "\x00", '"', "a,b", "\n", "\r\n"]),
)


@st.composite
def events_files(draw: st.DrawFn) -> bytes:
    columns = draw(st.lists(st.sampled_from(COLUMNS) | st.text(max_size=6), max_size=7))
    rows = draw(st.lists(st.lists(cells, max_size=len(columns) + 2), max_size=12))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    if draw(st.integers(0, 4)) == 0:  # raw damage: stray bytes, invalid UTF-8, a cut
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        data = data[:pos] + draw(st.binary(max_size=4)) + data[pos + 1:]
    return data


def check_events(path: Path, data: bytes, known: bool) -> str:
    """The property: a log consistent with its report, or ProfileError."""
    path.write_bytes(data)
    try:
        log = read_events(path, known_items={"i1", "x"} if known else None)
    except ProfileError:
        return "refused"
    assert len(log.interactions) <= log.report.rows
    for it in log.interactions:
        assert it.user_id and it.item_id and it.weight > 0
        assert it.timestamp is None or it.timestamp == it.timestamp  # never NaN
    return "read"


def test_a_fuzzed_events_csv_reads_or_raises_profile_error(tmp_path: Path):
    @FUZZ
    @given(events_files(), st.booleans())
    def check(data: bytes, known: bool) -> None:
        check_events(tmp_path / "events.csv", data, known)

    check()
