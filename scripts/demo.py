"""`make demo`: a real backup, verify and restore round trip with nothing configured by hand.

Starts a throwaway PostgreSQL cluster with a small invoices database and a folder of PDFs,
runs kbackupd in the foreground on a demo config, takes a backup with kbackupctl, has kbackupd
verify it with a test restore, checks the stored objects against the manifest by hand,
restores the dump with stock tools (zstd | pg_restore)
into a new database and the files with tar, and compares rows and bytes. Cleans up after.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE invoices (
    id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id),
    number text UNIQUE NOT NULL, issued date NOT NULL, total numeric(12,2) NOT NULL,
    pdf_path text
);
CREATE TABLE invoice_lines (
    invoice_id int NOT NULL REFERENCES invoices(id), line int NOT NULL,
    description text NOT NULL, amount numeric(12,2) NOT NULL, PRIMARY KEY (invoice_id, line)
);
INSERT INTO customers (name, email)
    SELECT 'Customer ' || g, 'customer' || g || '@example.com' FROM generate_series(1, 40) g;
INSERT INTO invoices (customer_id, number, issued, total, pdf_path)
    SELECT 1 + g % 40, 'INV-' || lpad(g::text, 5, '0'), date '2026-01-01' + g % 300,
           round((random() * 900 + 100)::numeric, 2),
           '2026/' || lpad((1 + g % 12)::text, 2, '0') || '/INV-' || lpad(g::text, 5, '0') || '.pdf'
    FROM generate_series(1, 1200) g;
INSERT INTO invoice_lines
    SELECT i.id, l, 'Item ' || l, round((random() * 200)::numeric, 2)
    FROM invoices i, generate_series(1, 3) l;
"""


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Demo:
    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()
        self.pgdata = base / "pgdata"
        self.conf = base / "conf"
        self.store = base / "backups"
        self.pdfs = base / "app" / "pdfs"
        self.socket = base / "kbackupd.sock"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise SystemExit("PostgreSQL server binaries not found: run `make sysdeps` as root")
        self.pg_bin = Path(found[-1]).parent
        self.daemon: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "KBACKUP_SOCKET": str(self.socket),
                    "KBACKUP_CONFIG_DIR": str(self.conf)}

    def psql(self, db: str, sql: str) -> str:
        return run(["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                    "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql],
                   capture_output=True).stdout.strip()

    def counts(self, db: str) -> dict[str, int]:
        return {t: int(self.psql(db, f"SELECT count(*) FROM {t}"))
                for t in ("customers", "invoices", "invoice_lines")}

    def start_postgres(self) -> None:
        say(f"Starting a throwaway PostgreSQL cluster on 127.0.0.1:{self.port}")
        self.pgdata.mkdir()
        if self.as_postgres:
            shutil.chown(self.pgdata, "postgres")
            os.chmod(self.base, 0o755)
        run([*self.as_postgres, str(self.pg_bin / "initdb"), "-D", str(self.pgdata), "-U",
             "postgres", "--auth=trust"], capture_output=True)
        run([*self.as_postgres, str(self.pg_bin / "pg_ctl"), "-D", str(self.pgdata), "-w",
             "-l", str(self.pgdata / "server.log"), "-o",
             f"-p {self.port} -k {self.pgdata} -c listen_addresses=127.0.0.1", "start"],
            capture_output=True)
        self.psql("postgres", "CREATE DATABASE invoices")
        self.psql("invoices", SCHEMA)
        print("database 'invoices':", self.counts("invoices"))

    def make_pdfs(self) -> None:
        for number in range(1, 61):
            folder = self.pdfs / "2026" / f"{1 + number % 12:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            body = b"%PDF-1.4\n" + os.urandom(20_000 + number * 500) + b"\n%%EOF\n"
            (folder / f"INV-{number:05d}.pdf").write_bytes(body)
        (self.pdfs / "upload.tmp").write_text("half-uploaded file, excluded by the job")
        print(f"{self.pdfs}: 60 PDF files")

    def write_config(self) -> None:
        (self.conf / "jobs.d").mkdir(parents=True)
        (self.conf / "kbackupd.toml").write_text(f"""\
[daemon]
socket = "{self.socket}"
socket_group = ""
admin_group = ""
state_dir = "{self.base / 'state'}"
max_concurrent_jobs = 2

[storage.local]
type = "local"
path = "{self.store}"
""")
        (self.conf / "jobs.d" / "shop.toml").write_text(f"""\
schedules = [ {{ cron = "0 2 * * *", tag = "daily" }}, {{ cron = "30 3 * * 0", tag = "weekly" }} ]
timezone = "Europe/London"
targets = ["local"]
timeout = "1h"

[[postgres]]
name = "invoices"
dsn = "host=127.0.0.1 port={self.port} dbname=invoices user=postgres"

[[files]]
name = "pdfs"
path = "{self.pdfs}"
exclude = ["*.tmp"]
""")
        say("Demo configuration")
        for path in (self.conf / "kbackupd.toml", self.conf / "jobs.d" / "shop.toml"):
            print(f"--- {path}\n{path.read_text()}")
        self.ctl("config", "check")

    def ctl(self, *args: str, capture: bool = False) -> str:
        print(f"$ kbackupctl {' '.join(args)}", flush=True)
        result = subprocess.run([str(BIN / "kbackupctl"), *args], env=self.env, text=True,
                                stdout=subprocess.PIPE if capture else None)
        if result.returncode != 0:
            raise SystemExit(f"kbackupctl {' '.join(args)} failed (exit {result.returncode})")
        return result.stdout or ""

    def start_daemon(self) -> None:
        say("Starting kbackupd in the foreground (its log lines are prefixed 'kbackupd |')")
        self.daemon = subprocess.Popen(
            ["sh", "-c", f"exec {BIN / 'kbackupd'} --config-dir {self.conf} 2>&1 "
                         "| sed -u 's/^/kbackupd | /'"], env=self.env, start_new_session=True)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                raise SystemExit("kbackupd did not start")
            time.sleep(0.1)

    def backup(self) -> str:
        say("Taking a backup: database AND files, zstd-compressed, sha256-checksummed")
        backup_id = self.ctl("run", "shop", "--wait", capture=True).strip().splitlines()[-1]
        print(backup_id)
        self.ctl("status")
        self.ctl("backups")
        self.ctl("show", backup_id)
        return backup_id

    def verify(self, backup_id: str) -> None:
        say("Proving it restores: kbackupd restores the dump into a scratch database and the"
            " files into a scratch directory, and compares row counts and file hashes")
        self.ctl("verify", backup_id, "--level", "restore-test", "--wait")

    def check_objects(self, backup_id: str) -> Path:
        say("Checking every stored object against manifest.json (size and sha256)")
        [folder] = list(self.store.glob(f"shop/*/*/{backup_id}"))
        manifest = json.loads((folder / "manifest.json").read_text())
        for component in manifest["components"]:
            path = folder / component["file"]
            ok = (path.stat().st_size == component["size_bytes"]
                  and sha256(path) == component["sha256"])
            print(f"{component['file']:32} {'OK' if ok else 'MISMATCH'}")
            if not ok:
                raise SystemExit("stored object does not match its manifest")
        return folder

    def restore(self, folder: Path) -> None:
        say("Restoring with stock tools only: zstd -dc db-invoices.dump.zst | pg_restore")
        self.psql("postgres", "CREATE DATABASE invoices_restored")
        pipeline = (f"zstd -dc {folder}/db-invoices.dump.zst | pg_restore -h 127.0.0.1 -p"
                    f" {self.port} -U postgres -d invoices_restored")
        print(f"$ {pipeline}")
        run(["bash", "-o", "pipefail", "-c", pipeline])
        before, after = self.counts("invoices"), self.counts("invoices_restored")
        for table in before:
            print(f"{table:15} original {before[table]:6}  restored {after[table]:6}"
                  f"  {'OK' if before[table] == after[table] else 'MISMATCH'}")
        if before != after:
            raise SystemExit("restored row counts differ")
        totals = [self.psql(db, "SELECT sum(total) FROM invoices")
                  for db in ("invoices", "invoices_restored")]
        print(f"sum(invoices.total): original {totals[0]}, restored {totals[1]}")
        if totals[0] != totals[1]:
            raise SystemExit("restored invoice totals differ")

        say("Restoring the files: zstd -dc files-pdfs.tar.zst | tar -x")
        out = self.base / "restored-pdfs"
        out.mkdir()
        run(["bash", "-o", "pipefail", "-c",
             f"zstd -dc {folder}/files-pdfs.tar.zst | tar -x -C {out}"])
        original = {p.relative_to(self.pdfs): sha256(p) for p in self.pdfs.rglob("*.pdf")}
        restored = {p.relative_to(out): sha256(p) for p in out.rglob("*") if p.is_file()}
        print(f"{len(restored)} files restored, {len(original)} PDFs in the app folder,"
              f" identical bytes: {'yes' if restored == original else 'NO'}")
        if restored != original:
            raise SystemExit("restored files differ")

    def cleanup(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            self.daemon.wait(30)
        if self.pgdata.exists():
            subprocess.run([*self.as_postgres, str(self.pg_bin / "pg_ctl"), "-D",
                            str(self.pgdata), "-m", "fast", "stop"], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the demo directory")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kbackup-demo-"))
    demo = Demo(base)
    try:
        demo.start_postgres()
        demo.make_pdfs()
        demo.write_config()
        demo.start_daemon()
        backup_id = demo.backup()
        demo.verify(backup_id)
        folder = demo.check_objects(backup_id)
        demo.restore(folder)
        say(f"Demo complete: backup {backup_id} restored with identical rows and bytes.")
    finally:
        demo.cleanup()
        if args.keep:
            print(f"demo files kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
