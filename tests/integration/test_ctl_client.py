"""kbackupctl's client on the Unix socket: what the user reads when the other end misbehaves."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from kbackup.ctl.client import Client, CliError


def serve_once(path: Path, response: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(response)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_a_non_json_answer_is_shown_with_its_status_and_first_line(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    thread = serve_once(path, b"HTTP/1.0 502 Bad Gateway\r\n\r\nupstream down\nmore\n")
    with pytest.raises(CliError) as raised:
        Client(str(path)).call("GET", "/v1/status")
    thread.join(5)
    assert str(raised.value) == "kbackupd answered HTTP 502 with non-JSON data: upstream down"


def test_a_missing_socket_says_the_daemon_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(CliError) as raised:
        Client(str(tmp_path / "none.sock")).call("GET", "/v1/status")
    assert raised.value.code == 3
    assert str(raised.value).startswith("kbackupd is not running: no socket at ")
