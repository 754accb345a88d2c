"""The runner's rules with a fake work function: no PostgreSQL, no daemon, no child processes.

max_concurrent_jobs queues the rest; a second trigger of the same kind for the same key joins
the running one; another kind is refused with RunnerBusy; the per-job timeout; shutdown
cancels running and queued work; on_finish hears every run's end with its status and error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbackup.catalog import Catalog
from kbackup.config import Config, load_config
from kbackup.runner import ActiveRun, Runner, RunnerBusy

pytestmark = pytest.mark.unit

JOBS = ("a", "b", "c", "d")


def write_config(base: Path, max_jobs: int = 2, timeout: str = "1h",
                 jobs: tuple[str, ...] = JOBS) -> Path:
    conf = base / "conf"
    (conf / "jobs.d").mkdir(parents=True, exist_ok=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{base / "state"}"\nmax_concurrent_jobs = {max_jobs}\n'
        f'[storage.local]\ntype = "local"\npath = "{base / "store"}"\n')
    for old in (conf / "jobs.d").glob("*.toml"):
        old.unlink()
    for name in jobs:
        (conf / "jobs.d" / f"{name}.toml").write_text(
            f'targets = ["local"]\ntimeout = "{timeout}"\n'
            f'[[files]]\nname = "files"\npath = "{base}"\n')
    return conf


def make_config(base: Path, **kw: object) -> Config:
    return load_config(write_config(base, **kw))  # type: ignore[arg-type]


class Gate:
    """A fake work function: records who runs at once, then waits to be released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.active = 0
        self.peak = 0
        self.configs: list[Config] = []

    async def work(self, run: ActiveRun, config: Config) -> str | None:
        self.started.append(run.job)
        self.configs.append(config)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.release.wait()
        finally:
            self.active -= 1
        return None


async def settle(condition: Callable[[], bool]) -> None:
    """Let the event loop run until condition() holds (5 s at most)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the runner did not get there within 5 s")


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    found = Catalog(tmp_path / "catalog")
    yield found
    found.close()


@pytest.fixture
def finished() -> list[tuple[str, str, str | None]]:
    return []


def runner_for(config: Config, catalog: Catalog,
               finished: list[tuple[str, str, str | None]]) -> Runner:
    runner = Runner(config, catalog, {})
    runner.on_finish = lambda run, status, error: finished.append((run.id, status, error))
    return runner


async def test_max_concurrent_jobs_queues_the_rest(tmp_path: Path, catalog: Catalog,
                                                   finished: list) -> None:
    runner = runner_for(make_config(tmp_path, max_jobs=2), catalog, finished)
    gate = Gate()
    runs = [runner.submit(name, "backup", "manual", gate.work)[0] for name in JOBS]
    await settle(lambda: len(gate.started) == 2)
    await asyncio.sleep(0.05)  # room for a third one to start, if the limit let it
    assert gate.started == ["a", "b"]
    assert [r.progress.phase for r in runs] == ["starting", "starting", "queued", "queued"]
    # Queued runs are known (status, delete guards) and recorded as running already.
    assert set(runner.active) == set(JOBS)
    assert all(catalog.get_run(r.id)["status"] == "running" for r in runs)  # type: ignore[index]

    gate.release.set()
    await asyncio.gather(*(r.done.wait() for r in runs))
    assert sorted(gate.started) == sorted(JOBS)
    assert gate.peak == 2
    assert runner.active == {}
    assert sorted(f[1] for f in finished) == ["complete"] * 4
    for run in runs:
        row = catalog.get_run(run.id)
        assert row is not None
        assert (row["status"], row["error"], row["kind"]) == ("complete", None, "backup")
        assert row["finished_at"] is not None
        assert run.progress.phase == "complete"


async def test_a_limit_of_one_runs_jobs_one_after_the_other(tmp_path: Path, catalog: Catalog,
                                                            finished: list) -> None:
    runner = runner_for(make_config(tmp_path, max_jobs=1), catalog, finished)
    order: list[str] = []

    async def work(run: ActiveRun, config: Config) -> None:
        order.append(f"start {run.job}")
        await asyncio.sleep(0.01)
        order.append(f"end {run.job}")

    runs = [runner.submit(name, "verify", "manual", work)[0] for name in ("a", "b", "c")]
    await asyncio.gather(*(r.done.wait() for r in runs))
    assert order == ["start a", "end a", "start b", "end b", "start c", "end c"]


async def test_a_second_trigger_of_the_same_kind_is_coalesced(tmp_path: Path, catalog: Catalog,
                                                              finished: list) -> None:
    runner = runner_for(make_config(tmp_path), catalog, finished)
    gate = Gate()
    first, joined = runner.submit("a", "backup", "scheduled", gate.work)
    assert joined is False
    second, joined = runner.submit("a", "backup", "manual", gate.work)
    third, joined_again = runner.submit("a", "backup", "catch-up", gate.work)
    assert joined is True and joined_again is True
    assert second is first and third is first
    assert first.coalesced == 2
    assert first.as_dict()["coalesced_triggers"] == 2
    assert first.trigger == "scheduled"  # the run keeps the trigger that started it

    gate.release.set()
    await first.done.wait()
    assert gate.started == ["a"]  # the work ran once
    assert catalog.count_runs("a") == 1
    assert finished == [(first.id, "complete", None)]

    # Once it has finished, a new trigger starts a new run.
    again, joined = runner.submit("a", "backup", "manual", gate.work)
    assert joined is False and again.id != first.id
    await again.done.wait()
    assert catalog.count_runs("a") == 2


async def test_another_kind_on_a_busy_job_is_refused(tmp_path: Path, catalog: Catalog,
                                                     finished: list) -> None:
    runner = runner_for(make_config(tmp_path), catalog, finished)
    gate = Gate()
    backup, _ = runner.submit("a", "backup", "manual", gate.work)
    with pytest.raises(RunnerBusy) as caught:
        runner.submit("a", "restore", "manual", gate.work)
    assert "job a is busy with a backup run" in str(caught.value)
    assert backup.id in str(caught.value)
    assert catalog.count_runs("a") == 1  # the refused run left no trace

    # Another key (a verification keyed by its backup) runs beside it; other jobs too.
    verify, joined = runner.submit("a", "verify", "manual", gate.work, key="verify:x",
                                   target_id="x")
    other, _ = runner.submit("b", "restore", "manual", gate.work)
    assert joined is False
    await settle(lambda: len(gate.started) == 2)
    assert runner.find(verify.id) is verify and runner.find("nope") is None
    assert runner.using("x") == [verify]
    assert runner.using(backup.id) == [backup]  # a backup run writes the backup of its id
    gate.release.set()
    await asyncio.gather(backup.done.wait(), verify.done.wait(), other.done.wait())
    assert runner.using("x") == []
    assert catalog.get_run(verify.id)["backup_id"] == "x"  # type: ignore[index]


async def test_an_unknown_job_is_refused(tmp_path: Path, catalog: Catalog,
                                         finished: list) -> None:
    runner = runner_for(make_config(tmp_path), catalog, finished)
    with pytest.raises(KeyError):
        runner.submit("nope", "backup", "manual", Gate().work)
    assert catalog.count_runs() == 0


async def test_the_job_timeout_stops_the_work(tmp_path: Path, catalog: Catalog,
                                              finished: list) -> None:
    runner = runner_for(make_config(tmp_path, timeout="0.2"), catalog, finished)
    cancelled = asyncio.Event()

    async def forever(run: ActiveRun, config: Config) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = asyncio.get_running_loop()
    began = loop.time()
    run, _ = runner.submit("a", "backup", "manual", forever)
    await run.done.wait()
    assert loop.time() - began < 2
    assert cancelled.is_set()
    [(run_id, status, error)] = finished
    assert (run_id, status) == (run.id, "failed")
    assert error is not None and error.startswith("timed out after")
    assert error.endswith("(job timeout)")
    row = catalog.get_run(run.id)
    assert row is not None and (row["status"], row["error"]) == ("failed", error)
    assert runner.active == {}


async def test_failures_are_recorded_with_their_error(tmp_path: Path, catalog: Catalog,
                                                      finished: list) -> None:
    runner = runner_for(make_config(tmp_path), catalog, finished)

    async def says_no(run: ActiveRun, config: Config) -> str:
        return "nothing to do"

    async def raises(run: ActiveRun, config: Config) -> None:
        raise RuntimeError("disk on fire")

    async def raises_blank(run: ActiveRun, config: Config) -> None:
        raise ValueError()

    runs = [runner.submit("a", "verify", "manual", says_no)[0],
            runner.submit("b", "verify", "manual", raises)[0],
            runner.submit("c", "verify", "manual", raises_blank)[0]]
    await asyncio.gather(*(r.done.wait() for r in runs))
    errors = {run_id: (status, error) for run_id, status, error in finished}
    assert errors[runs[0].id] == ("failed", "nothing to do")
    assert errors[runs[1].id] == ("failed", "disk on fire")
    assert errors[runs[2].id] == ("failed", "ValueError")  # never an empty error
    for run in runs:
        row = catalog.get_run(run.id)
        assert row is not None and (row["status"], row["error"]) == errors[run.id]


async def test_a_failed_backup_run_marks_its_backup_failed(tmp_path: Path, catalog: Catalog,
                                                           finished: list) -> None:
    runner = runner_for(make_config(tmp_path), catalog, finished)

    async def half_written(run: ActiveRun, config: Config) -> None:
        catalog.upsert_backup(run.id, run.job, "running", run.trigger, "2026-01-01T00:00:00Z",
                              None, 0, {"local": "running"}, None)
        raise RuntimeError("pg_dump died")

    run, _ = runner.submit("a", "backup", "manual", half_written)
    await run.done.wait()
    backup = catalog.get_backup(run.id)
    assert backup is not None
    assert (backup["status"], backup["error"]) == ("failed", "pg_dump died")
    assert catalog.get_run(run.id)["backup_id"] == run.id  # type: ignore[index]


async def test_a_failing_on_finish_hook_does_not_break_the_runner(tmp_path: Path,
                                                                  catalog: Catalog) -> None:
    runner = Runner(make_config(tmp_path), catalog, {})

    def hook(run: ActiveRun, status: str, error: str | None) -> None:
        raise RuntimeError("alerting is down")

    runner.on_finish = hook
    gate = Gate()
    gate.release.set()
    run, _ = runner.submit("a", "backup", "manual", gate.work)
    await asyncio.wait_for(run.done.wait(), 5)
    assert runner.active == {}
    assert catalog.get_run(run.id)["status"] == "complete"  # type: ignore[index]


async def test_shutdown_cancels_running_and_queued_work(tmp_path: Path, catalog: Catalog,
                                                        finished: list) -> None:
    runner = runner_for(make_config(tmp_path, max_jobs=1), catalog, finished)
    gate = Gate()
    running, _ = runner.submit("a", "backup", "scheduled", gate.work)
    queued, _ = runner.submit("b", "backup", "scheduled", gate.work)
    await settle(lambda: gate.started == ["a"])
    await runner.shutdown(grace=5)
    assert running.done.is_set() and queued.done.is_set()
    assert gate.started == ["a"]  # the queued run never started
    assert runner.active == {}
    for run in (running, queued):
        row = catalog.get_run(run.id)
        assert row is not None
        assert (row["status"], row["error"]) == ("failed", "aborted: daemon shutting down")
    assert sorted(finished) == sorted([(running.id, "failed", "aborted: daemon shutting down"),
                                       (queued.id, "failed", "aborted: daemon shutting down")])


async def test_shutdown_with_nothing_running_returns_at_once(tmp_path: Path,
                                                             catalog: Catalog) -> None:
    runner = Runner(make_config(tmp_path), catalog, {})
    await asyncio.wait_for(runner.shutdown(grace=5), 1)


async def test_reconfigure_resizes_the_limit_and_queued_runs_get_the_new_config(
        tmp_path: Path, catalog: Catalog, finished: list) -> None:
    old = make_config(tmp_path, max_jobs=1)
    runner = runner_for(old, catalog, finished)
    gate = Gate()
    first, _ = runner.submit("a", "backup", "manual", gate.work)
    second, _ = runner.submit("b", "backup", "manual", gate.work)
    await settle(lambda: gate.started == ["a"])

    new = make_config(tmp_path, max_jobs=2)
    await runner.reconfigure(new, {})
    await settle(lambda: len(gate.started) == 2)  # the larger limit lets the queued one in
    assert gate.configs[0] is old  # a running job keeps the config it started with
    assert gate.configs[1] is new  # a queued one gets the newest when its turn comes
    gate.release.set()
    await asyncio.gather(first.done.wait(), second.done.wait())


async def test_a_queued_run_of_a_job_removed_by_reload_fails(tmp_path: Path, catalog: Catalog,
                                                              finished: list) -> None:
    runner = runner_for(make_config(tmp_path, max_jobs=1), catalog, finished)
    gate = Gate()
    first, _ = runner.submit("a", "backup", "manual", gate.work)
    doomed, _ = runner.submit("b", "backup", "manual", gate.work)
    await settle(lambda: gate.started == ["a"])
    await runner.reconfigure(make_config(tmp_path, max_jobs=1, jobs=("a",)), {})
    gate.release.set()
    await asyncio.gather(first.done.wait(), doomed.done.wait())
    assert gate.started == ["a"]
    row = catalog.get_run(doomed.id)
    assert row is not None and row["status"] == "failed"
    assert row["error"] == "job b was removed from the configuration"
