"""Other hosts' backups in a shared bucket (`catalog rescan --all-hosts`), read-only.

A fleet shares one S3 bucket and gives each host its own folder: `prefix = "db1/"` on db1,
`"web1/"` on web1 (or "kbackup/db1/", ...). The folders beside this host's are the other
hosts (local and WebDAV targets are not read: their parent may be anything). Their backups
enter the catalog under the job name `HOST:JOB` (so no health check, retention rule or
listing of this host's jobs counts them) and on the target `TARGET@HOST`: a storage built
here, for reading only. Restore and verify read from it; delete refuses it, prune never
lists it. Restoring needs a job of the manifest's name configured here (its sources tell
where to restore), as on any new server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kbackup.config import Config, StorageConfig
from kbackup.errors import Invalid
from kbackup.repository import Manifest, is_manifest_key, list_manifests
from kbackup.storage import Storage, StorageError, open_storage

HOST_MARK = "@"  # TARGET@HOST: another host's copy on one of this host's targets
JOB_MARK = ":"  # HOST:JOB: another host's job in the catalog


def host_job(host: str, job: str) -> str:
    return f"{host}{JOB_MARK}{job}"


def host_target(target: str, host: str) -> str:
    return f"{target}{HOST_MARK}{host}"


def is_other_host(target: str) -> bool:
    return HOST_MARK in target


def local_job(row: dict[str, Any]) -> str:
    """The job of this host whose settings (keys, sources) read a catalog row's backup: its
    own job, or for another host's backup the job of the same name here."""
    if JOB_MARK in row["job"] and row.get("manifest"):
        return str(row["manifest"]["job"])
    return str(row["job"])


def layout(config: StorageConfig) -> tuple[str, str] | None:
    """(parent prefix, own folder) of an S3 target with a per-host prefix, else None (a
    local or WebDAV target's parent may be anything: nobody lists it)."""
    if config.type != "s3" or not config.prefix:
        return None
    parts = config.prefix.strip("/").split("/")
    return "".join(p + "/" for p in parts[:-1]), parts[-1]


def _moved(config: StorageConfig, prefix: str) -> StorageConfig:
    return config.model_copy(update={"prefix": prefix})


def shared_targets(config: Config) -> dict[str, tuple[str, str]]:
    """The targets --all-hosts reads: name -> (parent, own folder); Invalid when none."""
    found = {name: folders for name, own in config.storage.items()
             if (folders := layout(own)) is not None}
    if not found:
        raise Invalid("--all-hosts needs an S3 target with a per-host prefix (e.g. prefix ="
                      ' "db1/" on host db1, "web1/" on web1 in one bucket); none is configured')
    return found


async def other_hosts(name: str, config: StorageConfig, parent: str, own: str) -> list[str]:
    """The folders beside this host's that hold at least one backup manifest."""
    shared = open_storage(name, _moved(config, parent))
    hosts = set()
    for info in await shared.list(""):
        host, _, rest = info.key.partition("/")
        if host != own and is_manifest_key(rest):
            hosts.add(host)
    return sorted(hosts)


def host_storage(config: Config, target: str) -> Storage | None:
    """The read-only storage behind a `TARGET@HOST` name, None if TARGET is not configured."""
    name, _, host = target.partition(HOST_MARK)
    own = config.storage.get(name)
    folders = layout(own) if own is not None else None
    if own is None or folders is None or not host or "/" in host or host in (".", ".."):
        return None
    return open_storage(target, _moved(own, folders[0] + host + "/"))


def with_other_hosts(config: Config, storages: dict[str, Storage],
                     targets: Iterable[str]) -> dict[str, Storage]:
    """This host's storages plus those of the other hosts' copies among `targets`."""
    found = dict(storages)
    for target in targets:
        if is_other_host(target) and target not in found:
            storage = host_storage(config, target)
            if storage is not None:
                found[target] = storage
    return found


async def scan_other_hosts(config: Config) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every other host's complete backup on this host's targets: id -> {"manifest",
    "host", "targets"}; and the errors (one line per target or host that failed)."""
    found: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for name, (parent, folder) in shared_targets(config).items():
        try:
            hosts = await other_hosts(name, config.storage[name], parent, folder)
        except StorageError as exc:
            errors.append(f"{name}: {exc}")
            continue
        for host in hosts:
            target = host_target(name, host)
            storage = host_storage(config, target)
            assert storage is not None
            try:
                manifests: list[Manifest] = await list_manifests(storage)
            except StorageError as exc:
                errors.append(f"{target}: {exc}")
                continue
            for manifest in manifests:
                entry = found.setdefault(manifest.id, {"manifest": manifest, "host": host,
                                                       "targets": {}})
                entry["targets"][target] = "complete"
    return found, errors
