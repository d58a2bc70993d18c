"""DLQ selection, audit headers and the summary, without a broker."""

from __future__ import annotations

from consumer.dlq import DeadLetter, Selection, audit_headers, summarize


def letter(offset: int, reason: str = "invalid_event", ts: int = 1_700_000_000_000,
           **headers: str) -> DeadLetter:
    base = {"vmevents.dlq.reason": reason, "vmevents.dlq.error": f"error {offset}",
            "vmevents.dlq.source.topic": "vm.events.raw", "vmevents.dlq.source.partition": "2",
            "vmevents.dlq.source.offset": str(100 + offset)}
    return DeadLetter(0, offset, ts + offset, b"k", b'{"x": 1}',
                      {**base, **{k.replace("__", "."): v for k, v in headers.items()}})


def test_selection_takes_the_reason_and_bounds_and_leaves_repeat_failures_unless_forced() -> None:
    sel = Selection(frozenset({"invalid_event"}), from_offset=2, to_offset=5,
                    since_ms=1_700_000_000_003)
    assert sel.skip(letter(3)) is None
    assert sel.skip(letter(2)) == "out_of_range"  # before --since
    assert sel.skip(letter(6)) == "out_of_range"
    assert sel.skip(letter(4, reason="too_large")) == "other_reason"
    again = letter(4, **{"vmevents__redrive__count": "1"})
    assert sel.skip(again) == "failed_after_redrive"
    assert Selection(frozenset({"invalid_event"}), force=True).skip(again) is None


def test_audit_headers_count_up_and_keep_the_first_origin() -> None:
    first = dict(audit_headers(letter(7), "vm.events.dlq", 42))
    assert first["vmevents.redrive.count"] == b"1"
    assert first["vmevents.redrive.dlq.offset"] == b"7"
    assert first["vmevents.redrive.source.offset"] == b"107"
    assert first["vmevents.redrive.source.partition"] == b"2"
    # It failed again: the DLQ record now says where the re-driven copy was read, but the
    # redrive headers it carries keep the original coordinates.
    failed_again = letter(9, **{"vmevents__dlq__source__offset": "555",
                                **{k.replace(".", "__"): v.decode() for k, v in first.items()}})
    second = dict(audit_headers(failed_again, "vm.events.dlq", 43))
    assert second["vmevents.redrive.count"] == b"2"
    assert second["vmevents.redrive.source.offset"] == b"107"
    assert second["vmevents.redrive.dlq.offset"] == b"9"


def test_summary_groups_by_reason_most_frequent_first() -> None:
    letters = [letter(5), letter(1), letter(3, reason="too_large"), letter(9),
               letter(4, **{"vmevents__redrive__count": "1"})]
    groups = summarize(letters)
    assert [(g["reason"], g["count"]) for g in groups] == [("invalid_event", 4), ("too_large", 1)]
    inv = groups[0]
    assert (inv["first"]["offset"], inv["last"]["offset"]) == (1, 9)
    assert inv["failed_after_redrive"] == 1
    assert inv["example"]["source"] == "vm.events.raw[2]@101"
    assert inv["first"]["timestamp"] == "2023-11-14T22:13:20.001Z"
