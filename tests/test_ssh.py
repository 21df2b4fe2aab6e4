"""The SSH layer against real servers in network namespaces (see tests/netns.py).

`alpha` is OpenSSH's sshd (login shell bash, `sh` is dash) on port 22; `beta` is dropbear with a
busybox-only userland on port 2222, like the embedded Xen host. Most tests run on both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.lab import ssh
from kbisect.lab.ssh import (
    HostKeyChanged,
    HostKeyUnknown,
    KnownHosts,
    SshSession,
    connect,
    fetch_host_key,
    fingerprint,
    generate_keypair,
    transfer,
)
from netns import NetnsLab, SshHost

# Real sshd in network namespaces: seconds a test, so out of the quick loop.
pytestmark = [pytest.mark.needs_root, pytest.mark.slow]

if (
    shutil.which("ip") is None
    or not Path("/usr/sbin/sshd").exists()
    or not shutil.which("dropbear")
):
    pytest.fail(
        "the SSH tests need iproute2, openssh-server, dropbear-bin and busybox-static",
        pytrace=False,
    )

JOBS_DIR = f"/tmp/kbt-jobs-{os.getpid()}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssh")


@pytest.fixture(scope="module")
def lab(workdir: Path, ssh_client_key: Path) -> Iterator[dict[str, SshHost]]:
    netns = NetnsLab(workdir / "lab", ssh_client_key.with_name("id_ed25519.pub"))
    try:
        hosts = {"alpha": netns.add_openssh("alpha"), "beta": netns.add_dropbear("beta")}
        yield hosts
    finally:
        netns.close()
        shutil.rmtree(JOBS_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def known_hosts(workdir: Path, lab: dict[str, SshHost]) -> KnownHosts:
    pins = KnownHosts(workdir / "known_hosts")
    for host in lab.values():
        pins.add(host.address, host.port, host.host_key)
    return pins


@pytest.fixture(params=["alpha", "beta"])
def host(request: pytest.FixtureRequest, lab: dict[str, SshHost]) -> SshHost:
    return lab[request.param]


def open_session(host: SshHost, key: Path, known: KnownHosts) -> SshSession:
    session = connect(host.target(key), known, Deadline(20))
    session.jobs_dir = JOBS_DIR
    return session


@pytest.fixture
def session(host: SshHost, ssh_client_key: Path, known_hosts: KnownHosts) -> Iterator[SshSession]:
    with open_session(host, ssh_client_key, known_hosts) as opened:
        yield opened


# -- host keys ---------------------------------------------------------------------------------


def test_pinned_key_accepted_and_argv_quoted(session: SshSession) -> None:
    words = ["a b", "$HOME", "'q'", '"dq"', "`id`", "$(id)", ";", "|", "*", "", "\\n"]
    result = session.run(["printf", "%s|", *words], Deadline(20))
    assert result.status == 0, result
    assert result.stdout == ("|".join(words) + "|").encode()
    assert result.stderr == b""


def test_status_stdout_stderr(session: SshSession) -> None:
    result = session.run_shell("echo out; echo err >&2; exit 3", Deadline(20))
    assert (result.status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert session.run(["false"], Deadline(20)).status == 1
    assert session.run(["no-such-command-kbt"], Deadline(20)).status == 127


def test_unknown_key_refused(host: SshHost, ssh_client_key: Path, tmp_path: Path) -> None:
    empty = KnownHosts(tmp_path / "known_hosts")
    with pytest.raises(HostKeyUnknown) as caught:
        connect(host.target(ssh_client_key), empty, Deadline(20))
    message = str(caught.value)
    assert fingerprint(host.host_key) in message
    assert f"kbisect lab.trust {host.name}" in message
    assert host.address in message and f"port {host.port}" in message
    assert "CHANGED" not in message
    assert isinstance(caught.value, InfraError) and caught.value.exit_code == 3


def test_changed_key_refused_loudly(host: SshHost, ssh_client_key: Path, tmp_path: Path) -> None:
    impostor = generate_keypair(tmp_path / "other_host_key")
    pins = KnownHosts(tmp_path / "known_hosts")
    pins.add(host.address, host.port, impostor)
    with pytest.raises(HostKeyChanged) as caught:
        connect(host.target(ssh_client_key), pins, Deadline(20))
    message = str(caught.value)
    assert "HOST KEY CHANGED" in message
    assert fingerprint(host.host_key) in message and fingerprint(impostor) in message
    assert str(tmp_path / "known_hosts") in message
    assert not isinstance(caught.value, HostKeyUnknown)


def test_trust_flow_and_hashed_readonly_file(
    host: SshHost, ssh_client_key: Path, tmp_path: Path
) -> None:
    offered = fetch_host_key(host.address, host.port, Deadline(20))
    assert offered == host.host_key
    assert fingerprint(offered).startswith("SHA256:")
    # the same check as ssh-keygen -l makes
    pub = tmp_path / "offered.pub"
    pub.write_text(f"{offered.get_name()} {offered.get_base64()}\n")
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True
    )
    assert fingerprint(offered) in listed.stdout

    trusted = KnownHosts(tmp_path / "mine" / "known_hosts")
    trusted.add(host.address, host.port, offered)
    with connect(host.target(ssh_client_key), trusted, Deadline(20)) as s:
        assert s.run(["true"], Deadline(20)).ok

    # a shipped, hashed known_hosts file read-only, the writable one not there yet
    shipped = tmp_path / "shipped_known_hosts"
    shutil.copy(trusted.writable, shipped)
    subprocess.run(["ssh-keygen", "-H", "-f", str(shipped)], capture_output=True, check=True)
    assert shipped.read_text().startswith("|1|")
    hashed = KnownHosts(tmp_path / "absent" / "known_hosts", [shipped])
    with connect(host.target(ssh_client_key), hashed, Deadline(20)) as s:
        assert s.run(["true"], Deadline(20)).ok


def test_known_hosts_add_replace(tmp_path: Path) -> None:
    one = generate_keypair(tmp_path / "k1")
    two = generate_keypair(tmp_path / "k2")
    three = generate_keypair(tmp_path / "k3")
    pins = KnownHosts(tmp_path / "known_hosts")
    pins.add("10.0.0.1", 22, one)
    pins.add("10.0.0.1", 2222, two)
    pins.add("10.0.0.1", 22, one)  # again: nothing changes
    lines = pins.writable.read_text().splitlines()
    assert len(lines) == 2
    assert any(line.startswith("[10.0.0.1]:2222 ssh-ed25519 ") for line in lines)
    with pytest.raises(UserError, match="already pinned"):
        pins.add("10.0.0.1", 22, three)
    pins.add("10.0.0.1", 22, three, replace=True)
    assert pins.lookup("10.0.0.1", 22) == {"ssh-ed25519": three}
    assert pins.lookup("10.0.0.1", 2222) == {"ssh-ed25519": two}
    assert pins.lookup("10.0.0.2", 22) == {}
    assert not list(tmp_path.glob(".known_hosts.*"))  # no temporary file left
    # a key pinned in a read-only file is not overridden by kbisect
    fixed = KnownHosts(tmp_path / "other", [pins.writable])
    with pytest.raises(UserError, match="does not write"):
        fixed.add("10.0.0.1", 22, one, replace=True)


def test_unreachable_port_names_host(lab: dict[str, SshHost], ssh_client_key: Path) -> None:
    host = lab["alpha"]
    target = ssh.SshTarget("gone", host.address, 2999, "root", ssh_client_key)
    with pytest.raises(InfraError, match=r"gone \(root@.* port 2999\): cannot connect"):
        connect(target, KnownHosts(ssh_client_key.with_name("none")), Deadline(10))


def test_silent_server_hits_the_deadline(ssh_client_key: Path, tmp_path: Path) -> None:
    # A TCP port on loopback that accepts and never says a word: the deadline bounds the whole
    # login (paramiko's own timeouts are per read).
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        target = ssh.SshTarget("mute", "127.0.0.1", port, "root", ssh_client_key)
        started = time.monotonic()
        with pytest.raises(InfraError, match=r"mute \(root@127.0.0.1 port \d+\): no SSH login"):
            connect(target, KnownHosts(tmp_path / "kh"), Deadline(1))
        with pytest.raises(InfraError, match="no SSH handshake within 1 s"):
            fetch_host_key("127.0.0.1", port, Deadline(1))
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        for conn in accepted:
            conn.close()


# -- commands ----------------------------------------------------------------------------------


def test_megabytes_on_both_streams(session: SshSession) -> None:
    # stderr first, then stdout, then stderr again: a client that reads one stream to its end
    # before the other stalls as soon as the SSH window (2 MiB) fills.
    script = (
        "yes e | head -c 6000000 >&2; yes o | head -c 8000000; yes E | head -c 3000000 >&2; "
        "yes O | head -c 1000000"
    )
    result = session.run_shell(script, Deadline(120))
    assert result.status == 0
    assert result.stdout == b"o\n" * 4000000 + b"O\n" * 500000
    assert result.stderr == b"e\n" * 3000000 + b"E\n" * 1500000


def test_megabytes_of_stdin_echoed(session: SshSession) -> None:
    data = os.urandom(7_000_000)
    result = session.run(["cat"], Deadline(120), stdin=data)
    assert result.status == 0
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(data).digest()
    counted = session.run(["wc", "-c"], Deadline(60), stdin=data)
    assert int(counted.stdout) == len(data)


def test_deadline_stops_the_command_and_its_children(session: SshSession) -> None:
    pidfile = f"/tmp/kbt-pids-{secrets.token_hex(4)}"
    script = 'echo $$ > "$1"; sleep 300 & echo $! >> "$1"; sleep 301; wait'
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"still running after 2 s; stopped it"):
        session.run(["sh", "-c", script, "sh", pidfile], Deadline(2))
    assert time.monotonic() - started < 20
    pids = [int(p) for p in session.run(["cat", pidfile], Deadline(20)).text().split()]
    session.run(["rm", "-f", pidfile], Deadline(20))
    assert len(pids) == 2  # the shell and its background sleep
    # The namespaces share this machine's PID namespace, so the remote PIDs can be checked here;
    # a zombie waiting for init to reap it has stopped too.
    assert all(not running(pid) for pid in pids)


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def running(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def group_running(pgid: int) -> bool:
    """Whether any live (not zombie) process of this machine is in process group pgid."""
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def test_session_still_usable_after_a_deadline(session: SshSession) -> None:
    with pytest.raises(InfraError):
        session.run(["sleep", "100"], Deadline(1))
    assert session.run(["echo", "again"], Deadline(20)).stdout == b"again\n"


# -- files -------------------------------------------------------------------------------------


def test_upload_and_download(session: SshSession, tmp_path: Path) -> None:
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(3_000_001))
    remote = f"/tmp/kbt-upload-{secrets.token_hex(4)}"
    try:
        session.upload(local, remote, Deadline(60), mode=0o750)
        info = session.run(
            ["sh", "-c", 'sha256sum "$1"; stat -c %a "$1"', "sh", remote], Deadline(20)
        )
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        assert info.text().split() == [digest, remote, "750"]
        back = tmp_path / "back" / "payload.bin"
        session.download(remote, back, Deadline(60))
        assert back.read_bytes() == local.read_bytes()
        assert [p.name for p in back.parent.iterdir()] == ["payload.bin"]
        with pytest.raises(InfraError, match="download of /tmp/kbt-nope failed"):
            session.download("/tmp/kbt-nope", tmp_path / "nope", Deadline(20))
        assert not (tmp_path / "nope").exists()
    finally:
        session.run(["rm", "-f", remote], Deadline(20))


def test_corrupted_upload_detected(
    lab: dict[str, SshHost], ssh_client_key: Path, known_hosts: KnownHosts, tmp_path: Path
) -> None:
    # A stand-in `cat` early on the host's PATH drops the last byte of what it stores, as a
    # transfer cut short would; the host's real sha256sum must notice. (OpenSSH host only:
    # busybox sh runs its own applets before anything on PATH.)
    host = lab["alpha"]
    shim = host.shim_dir / "cat"
    shim.write_text('#!/bin/sh\nexec head -c -1 "$@"\n')
    shim.chmod(0o755)
    local = tmp_path / "module.ko"
    local.write_bytes(os.urandom(200_000))
    remote = f"/tmp/kbt-corrupt-{secrets.token_hex(4)}"
    try:
        with open_session(host, ssh_client_key, known_hosts) as session:
            with pytest.raises(InfraError, match="is corrupt: sha256") as caught:
                session.upload(local, remote, Deadline(60))
            assert hashlib.sha256(local.read_bytes()).hexdigest() in str(caught.value)
            shim.unlink()
            assert_no_file(session, remote)
    finally:
        shim.unlink(missing_ok=True)


def test_file_changed_during_upload_detected(
    session: SshSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The local file changes after it was hashed and before it is sent (a build rewriting it):
    # what arrives is not what was checked, and the host's sha256sum says so.
    local = tmp_path / "bzImage"
    local.write_bytes(os.urandom(300_000))
    real_hash = transfer._sha256_file

    def hash_then_change(path: Path) -> str:
        digest = real_hash(path)
        with path.open("r+b") as f:
            f.seek(1234)
            f.write(b"\xff\x00\xff")
        return digest

    monkeypatch.setattr(transfer, "_sha256_file", hash_then_change)
    remote = f"/tmp/kbt-changed-{secrets.token_hex(4)}"
    with pytest.raises(InfraError, match="is corrupt: sha256"):
        session.upload(local, remote, Deadline(60))
    assert_no_file(session, remote)


def assert_no_file(session: SshSession, remote: str) -> None:
    """Neither the target nor a temporary file of the upload is on the host."""
    left = session.run(["sh", "-c", 'ls -d "$1"* 2>/dev/null; true', "sh", remote], Deadline(20))
    assert left.stdout == b""


# -- detached jobs -----------------------------------------------------------------------------

TICKS = 'for i in 1 2 3 4 5 6; do echo "tick $i"; echo "warn $i" >&2; sleep 0.5; done; exit 7'


@pytest.mark.parametrize("how", ["kill-server-process", "close-socket"])
def test_job_survives_dropped_connection(
    host: SshHost, ssh_client_key: Path, known_hosts: KnownHosts, how: str
) -> None:
    name = f"ticks-{how}-{secrets.token_hex(3)}"
    before = host.connection_processes()
    first = open_session(host, ssh_client_key, known_hosts)
    job = first.start_job(["sh", "-c", TICKS], name)
    assert first.poll(job) == ssh.JobState(True, None)
    if how == "kill-server-process":
        ours = host.connection_processes() - before
        assert ours
        for pid in ours:
            os.kill(pid, signal.SIGKILL)
    else:
        first.transport.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(InfraError):
        end = time.monotonic() + 20
        while time.monotonic() < end:  # the transport notices the drop on its own thread
            first.run(["true"], Deadline(5))
            time.sleep(0.1)
    first.close()

    with open_session(host, ssh_client_key, known_hosts) as second:
        found = second.find_job(name)
        assert found == job
        state = second.wait_job(found, Deadline(30), interval=0.3)
        assert state == ssh.JobState(False, 7)
        output = second.job_output(found)
        assert output.stdout == b"".join(b"tick %d\n" % i for i in range(1, 7))
        assert output.stderr == b"".join(b"warn %d\n" % i for i in range(1, 7))
        second.remove_job(found)
        with pytest.raises(InfraError, match="no job"):
            second.poll(found)


def test_stop_job(session: SshSession) -> None:
    name = f"sleeper-{secrets.token_hex(3)}"
    job = session.start_job(["sh", "-c", "sleep 300 & sleep 301; wait"], name)
    assert session.poll(job).running
    with pytest.raises(InfraError, match="still running"):
        session.start_job(["true"], name)
    state = session.stop_job(job)
    assert state.running is False and state.status in {143, 137}
    assert not group_running(job.pid)
    again = session.start_job(["echo", "reused"], name)  # a finished job's name can be reused
    assert session.wait_job(again, Deadline(20), interval=0.2) == ssh.JobState(False, 0)
    assert session.job_output(again).stdout == b"reused\n"
    session.remove_job(again)


def test_job_killed_without_status_is_lost(session: SshSession) -> None:
    job = session.start_job(["sleep", "300"], f"lost-{secrets.token_hex(3)}")
    # as after a crash: the whole group dies at once, nobody writes an exit status
    os.killpg(job.pid, signal.SIGKILL)
    deadline = Deadline(10)
    while session.poll(job).running and not deadline.expired:
        time.sleep(0.1)
    assert session.poll(job) == ssh.JobState(False, None)
    session.remove_job(job)


# -- several hosts -----------------------------------------------------------------------------


def test_two_hosts_at_once(
    lab: dict[str, SshHost], ssh_client_key: Path, known_hosts: KnownHosts
) -> None:
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=30)

    def work(host: SshHost) -> None:
        try:
            with open_session(host, ssh_client_key, known_hosts) as s:
                barrier.wait()  # both connected at the same time
                results[host.name] = s.run_shell(
                    'sleep 1; echo "$SSH_CONNECTION"; head -c 2000000 /dev/zero | wc -c',
                    Deadline(60),
                ).stdout
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(h,)) for h in lab.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    for name, host in lab.items():
        connection, count = results[name].decode().splitlines()
        assert connection.split()[2:] == [host.address, str(host.port)]
        assert int(count) == 2000000


def test_busybox_host_is_busybox_only(
    lab: dict[str, SshHost], ssh_client_key: Path, known_hosts: KnownHosts
) -> None:
    with open_session(lab["beta"], ssh_client_key, known_hosts) as s:
        shell = s.run(["readlink", "/bin/sh"], Deadline(20)).text().strip()
        bash = s.run(["sh", "-c", "command -v bash || echo none"], Deadline(20)).text().strip()
        sftp = s.run(["sh", "-c", "command -v sftp-server || echo none"], Deadline(20)).text()
    assert (shell, bash, sftp.strip()) == ("busybox", "none", "none")


def test_generate_keypair(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "k")
    assert isinstance(key, paramiko.Ed25519Key)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k.pub").read_text().startswith("ssh-ed25519 ")
    with pytest.raises(UserError, match="already exists"):
        generate_keypair(tmp_path / "k")
