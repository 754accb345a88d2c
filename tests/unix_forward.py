"""A 127.0.0.1 TCP port forwarded to the daemon's Unix socket, as `ssh -L 8080:SOCKET` does.

A browser cannot talk to a Unix socket. The daemon sees the forwarder's credentials
(SO_PEERCRED of the process that connects), so the forwarder decides the role: in the test
process (root) it is an admin; as a subprocess under setpriv it is whoever it runs as.

Also runnable on its own (standard library only): `python unix_forward.py SOCKET` prints the
port it listens on, then forwards until killed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _serve(listener: socket.socket, target: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # closed: stop
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(target)
        except OSError:
            client.close()  # the daemon is restarting: the browser sees a reset
            upstream.close()
            continue
        threads = [threading.Thread(target=_pipe, args=pair, daemon=True)
                   for pair in ((client, upstream), (upstream, client))]
        for thread in threads:
            thread.start()
        threading.Thread(target=_close_after, args=(threads, client, upstream),
                         daemon=True).start()


def _close_after(threads: list[threading.Thread], *socks: socket.socket) -> None:
    for thread in threads:
        thread.join()
    for sock in socks:
        sock.close()


class Forwarder:
    """In this process: 127.0.0.1:port -> the Unix socket at `target`."""

    def __init__(self, target: Path):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=_serve, args=(self.listener, str(target)), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()


class ForwarderAs:
    """The same forwarder in a subprocess run as `user` (setpriv, with the user's groups)."""

    def __init__(self, target: Path, user: str):
        self.dir = Path(tempfile.mkdtemp(prefix="kbfwd"))
        script = self.dir / "unix_forward.py"
        shutil.copy(__file__, script)  # readable by the user, wherever the tests live
        self.dir.chmod(0o755)
        script.chmod(0o644)
        python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", python, "-I",
             str(script), str(target)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    forwarder = Forwarder(Path(sys.argv[1]))
    print(forwarder.port, flush=True)
    threading.Event().wait()
