"""Restoring a file tree: into a new empty directory (--files-to), or in place, extracted
beside the live tree and swapped in at the end, so a failure leaves the live tree as it was.
A single file is extracted into a directory beside it and renamed over it (atomic).
Planning refuses what would fail after the safety backup (a non-empty or unwritable target),
and in place what would lose secrets: a redacted backup is a template (KEY=***), and a
safety backup of a redacted source would not keep the live values."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from kbackup.config import JobConfig
from kbackup.errors import RestoreError
from kbackup.repository import Component
from kbackup.sources.base import Planned, PlanRefused, RestoreContext, RestoreOptions, Step
from kbackup.sources.files.config import FilesSource
from kbackup.sources.files.extract import extract_stream, pump_tar
from kbackup.sources.files.meta import REDACTED_NOTE, FilesMeta
from kbackup.sources.tools import check_writable


def _contents(meta: FilesMeta) -> str:
    """What the step extracts, as the plan and the restore output say it."""
    if meta.single_file:
        what = f"the file {Path(meta.path or '?').name}"
        return what + (f" as a {REDACTED_NOTE}" if meta.is_template else "")
    what = f"{meta.file_count} files"
    if meta.is_template:
        what += f" ({meta.redacted_files} of them as a {REDACTED_NOTE})"
    return what


def _plan_new(component: Component, files_to: str, size: int) -> Planned:
    target = Path(files_to)
    if not target.is_absolute():
        raise PlanRefused(f"--files-to must be an absolute path, got {files_to!r}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PlanRefused(f"--files-to {target} exists and is not an empty directory")
    check_writable(target, f"--files-to {target}")
    return Planned(Step(component.name, "files-new", str(target),
                        f"extract {_contents(FilesMeta.of(component))} into {target}",
                        size_bytes=size))


def _plan_in_place(job: JobConfig, component: Component, request: RestoreOptions,
                   size: int) -> Planned:
    source = job.source(component.name)
    if not isinstance(source, FilesSource):
        raise PlanRefused(f"files {component.name}: not configured in job {job.name}, so"
                          " its live path is unknown; use --files-to DIR")
    live = source.path
    _refuse_secret_loss(component, source, live)
    check_writable(live.parent, f"--in-place {live.parent}")  # extracted beside, swapped
    meta = FilesMeta.of(component)
    if not live.exists():  # a new server: nothing to replace, nothing to back up
        return Planned(Step(component.name, "files-replace", str(live),
                            f"{live} does not exist: extract {_contents(meta)} there",
                            size_bytes=size))
    if bool(meta.single_file) == live.is_dir():
        held = "a single file" if meta.single_file else "a directory"
        raise PlanRefused(f"files {component.name}: the backup holds {held} but {live} is"
                          f" {'a directory' if live.is_dir() else 'not a directory'}; use"
                          " --files-to DIR")
    step = Step(component.name, "files-replace", str(live),
                f"REPLACE the live {'file' if meta.single_file else 'tree'} {live}"
                " (extracted beside it, then swapped)"
                + ("" if request.no_safety_backup else "; safety backup of it first"),
                destructive=True, size_bytes=size)
    return Planned(step, [] if request.no_safety_backup else [component.name])


def _refuse_secret_loss(component: Component, source: FilesSource, live: Path) -> None:
    """In place, a template would replace the live secrets: refused, in one line."""
    if FilesMeta.of(component).is_template:
        raise PlanRefused(f"files {component.name}: the backup holds a {REDACTED_NOTE}, not"
                          " the values; restoring it in place would break the app: use"
                          " --files-to DIR and fill in the values")
    if source.redact and live.exists():
        raise PlanRefused(f"files {component.name}: the job redacts this source (redact ="
                          f' "{source.redact}"), so a safety backup of {live} would not keep'
                          " its values; use --files-to DIR")


def plan_files(job: JobConfig, component: Component, request: RestoreOptions) -> Planned:
    if request.in_place and request.files_to:
        raise PlanRefused("--in-place and --files-to exclude each other")
    size = FilesMeta.of(component).total_bytes
    size = component.raw_bytes if size is None else size
    if request.files_to:
        return _plan_new(component, request.files_to, size)
    if request.in_place:
        return _plan_in_place(job, component, request, size)
    return Planned(Step(component.name, "skip", "-", f"files {component.name} skipped: give"
                        " --files-to DIR (or --in-place) to restore them"))


async def restore_files(ctx: RestoreContext, step: Step, component: Component) -> None:
    final = Path(step.target)
    into = final
    if step.kind != "files-new":  # extract beside the live tree, swap in at the end
        into = final.with_name(f".{final.name}.kbackup-restore-{ctx.restore_id[-6:]}")
    await asyncio.to_thread(into.mkdir, parents=True, exist_ok=into == final)
    ctx.progress.phase = f"extracting files into {final}"
    try:
        stream = ctx.open(component, component)
        written = await pump_tar(stream.chunks(),
                                 lambda r: extract_stream(r, into, os.geteuid() == 0),
                                 ctx.advance)
        if into != final and FilesMeta.of(component).single_file:
            await asyncio.to_thread(_rename_single, into, written, final)
            return
    except BaseException:
        if into != final:
            await asyncio.to_thread(shutil.rmtree, into, True)
        raise
    if into != final:
        await asyncio.to_thread(_swap, into, final, ctx.restore_id[-6:])


def _rename_single(into: Path, written: list[dict[str, object]], live: Path) -> None:
    """The one file extracted beside the live file renamed over it (atomic), then the
    extraction directory removed."""
    files = [e for e in written if e.get("type") == "file"]
    if len(written) != 1 or len(files) != 1:
        raise RestoreError(f"{live}: the backup of a single file holds {len(written)} entries")
    os.rename(into / str(files[0]["path"]), live)
    shutil.rmtree(into, ignore_errors=True)


def _swap(new: Path, live: Path, suffix: str) -> None:
    old = live.with_name(f".{live.name}.kbackup-old-{suffix}")
    if live.exists():
        os.rename(live, old)
    os.rename(new, live)
    shutil.rmtree(old, ignore_errors=True)
