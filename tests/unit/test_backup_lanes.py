"""The two lanes of a backup run (databases; globals and config beside them): whose failure
the run reports, and that neither is left running."""

import asyncio

import pytest

from kbackup.jobs import backup
from kbackup.jobs.backup import _together


async def fails(after: float, message: str) -> None:
    await asyncio.sleep(after)
    raise RuntimeError(message)


async def test_the_dump_names_a_lost_server_even_when_the_globals_fail_first() -> None:
    with pytest.raises(RuntimeError, match="pg_dump failed"):
        await _together(fails(0.2, "pg_dump failed"), fails(0, "globals: cannot connect"))


async def test_the_lane_beside_is_reported_when_the_dump_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "MAIN_LANE_GRACE", 0.1)
    dump = asyncio.Event()

    async def long_dump() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            dump.set()

    with pytest.raises(RuntimeError, match="gpg key missing"):
        await _together(long_dump(), fails(0, "gpg key missing"))
    assert dump.is_set()  # cancelled and ended before the error came out


async def test_a_failed_dump_stops_the_lane_beside() -> None:
    beside = asyncio.Event()

    async def slow_globals() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            beside.set()

    with pytest.raises(RuntimeError, match="pg_dump failed"):
        await _together(fails(0, "pg_dump failed"), slow_globals())
    assert beside.is_set()


async def test_both_lanes_done_is_success() -> None:
    await _together(asyncio.sleep(0), asyncio.sleep(0.01))
