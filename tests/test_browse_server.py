"""`kbisect browse`'s server over real HTTP on 127.0.0.1: the Host header, bad requests, the
allow-list (only what the renderer wrote and the files its pages link), many clients at once,
and bad flags."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kbisect.browser import render_site
from kbisect.browser.serve import BACKLOG, serving
from kbisect.results.schema import DB_NAME
from test_browser import Built, _env, _program, make_results


@pytest.fixture
def built(tmp_path: Path) -> Built:
    b = make_results(tmp_path)
    render_site(b.store)
    yield b
    b.store.close()


def request(
    port: int, path: str, host: str | None = None, method: str = "GET"
) -> tuple[int, bytes]:
    """One request as the raw bytes a client sends (http.client would refuse some of them)."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    raw = ("\r\n".join([*lines, "Connection: close", "", ""])).encode("utf-8", "surrogateescape")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data, f"no answer to {method} {path[:60]}"
    return int(data.split(b" ", 2)[1]), data


def get(port: int, path: str) -> int:
    return request(port, path, f"127.0.0.1:{port}")[0]


def test_host_header_must_name_this_server(built: Built) -> None:
    with serving(built.results / "site", built.results) as server:
        port = server.port
        for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST"):
            assert request(port, "/site/index.html", host)[0] == 200, host
        # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "", "[::1]"):
            status, body = request(port, "/site/index.html", host)
            assert status == 421, host
            assert b"kbisect" not in body  # nothing of the site
        assert request(port, "/site/index.html", None)[0] == 400


def test_bad_requests_get_a_4xx_and_no_traceback(built: Built, tmp_path: Path) -> None:
    err = tmp_path / "stderr"
    script = tmp_path / "serve.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from kbisect.browser.serve import serving\n"
        "with serving(Path(sys.argv[1]) / 'site', Path(sys.argv[1])) as s:\n"
        "    print(s.port, flush=True)\n"
        "    sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), str(built.results)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err.open("w"),
        text=True,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        host = f"127.0.0.1:{port}"
        cases = {
            "/%00": 400,
            "/site/%00index.html": 400,
            "/site/index.html%00.txt": 400,
            "/%ff%fe": 400,
            "/" + "a" * 5000: 414,
            "/" + "a/" * 3000: 414,
            "/" + "a" * 300: 404,  # longer than a file name may be
            "/site/" + "x" * 300 + "/index.html": 404,
            "/%2e%2e/outside/secret.log": 404,
            "/site/..%2f..%2foutside/secret.log": 404,
            "/site\\index.html": 400,
            "*": 400,
            "http://evil.example/site/index.html": 200,  # absolute form: the path is what counts
        }
        for path, expected in cases.items():
            assert request(port, path, host)[0] == expected, path[:60]
        assert request(port, "/" + "b" * 70_000, host)[0] == 414  # http.server's own limit
        for method in ("POST", "PUT", "DELETE", "BREW"):
            status, data = request(port, "/site/index.html", host, method)
            assert status == 405 and b"Allow: GET, HEAD" in data, method
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"\x16\x03\x01garbage that is no HTTP\r\n\r\n")  # a TLS hello, say
            assert sock.recv(100).split(b" ")[1].startswith(b"4")
        assert get(port, "/site/index.html") == 200  # still serving
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err.read_text(), err.read_text()


def test_only_what_the_renderer_wrote_and_its_pages_link(built: Built) -> None:
    results = built.results
    run = built.runs[1]
    # things no page links, whatever their names
    shutil.copy(results / DB_NAME, results / "runs" / "backup.log")
    os.link(results / DB_NAME, results / "builds" / "other.log")
    (results / "runs" / "notes.txt").write_text("not the renderer's\n")
    shutil.copy(results / DB_NAME, results / "site" / "copy.html")  # even inside the site
    os.link(results / DB_NAME, results / "site" / "hardlink.html")
    with serving(results / "site", results) as server:
        port = server.port
        assert get(port, "/site/index.html") == 200
        assert get(port, "/site/") == 200  # the index of a folder
        assert get(port, f"/site/run/{run}/index.html") == 200
        assert get(port, "/builds/build.log") == 200  # linked from the build page
        assert get(port, f"/runs/{run}/junit.xml") in (200, 404)  # linked only if it exists
        for path in (
            "/site/.manifest.json",
            f"/{DB_NAME}",
            f"/{DB_NAME}-wal",
            "/runs/backup.log",
            "/builds/other.log",
            "/runs/notes.txt",
            "/site/copy.html",
            "/site/hardlink.html",
            "/site/run/",  # no listings
            f"/runs/{run}/leak/console.log",  # a symbolic link out of the results
        ):
            assert get(port, path) == 404, path
        # a render while serving: its new pages are served, files it removed are not
        (results / "site" / "copy.html").unlink()
        (results / "site" / "hardlink.html").unlink()
        render_site(built.store, full=True)
        assert get(port, "/site/index.html") == 200
        assert get(port, "/site/.manifest.json") == 404


def test_two_hundred_clients_at_once_are_all_answered(built: Built) -> None:
    assert BACKLOG >= 200
    with serving(built.results / "site", built.results) as server:
        port = server.port

        def one(_: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("GET", "/site/index.html")
                response = conn.getresponse()
                response.read()
                return response.status
            finally:
                conn.close()

        with ThreadPoolExecutor(max_workers=200) as pool:
            statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200


def test_bad_flags_exit_2_with_one_line(built: Built, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        for flags, says in (
            (["--port", "abc"], "expected an integer"),
            (["--port", "70000"], "expected a port from 1 to 65535"),
            (["--port", "-5"], "expected a port"),
            (["--port"], "needs a value"),
            (["--port", str(busy), "--no-render"], f"cannot serve on 127.0.0.1:{busy}"),
        ):
            done = subprocess.run(
                [sys.executable, str(_program(tmp_path)), "browse", *flags],
                cwd=tmp_path,
                env=_env(built),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 2, (flags, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and says in lines[0], (flags, done.stderr)
            assert "Traceback" not in done.stderr
