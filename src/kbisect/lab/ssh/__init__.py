"""SSH to lab hosts: pinned host keys, commands with wall-clock deadlines, uploads, detached jobs.

Everything here works against OpenSSH and against dropbear with a busybox userland (the embedded
host): no SFTP/SCP (dropbear has no server for them), and every remote script is plain POSIX sh
that bash, dash and busybox ash all run.

- `net`: where a host is (SshTarget) and sockets bounded by a deadline (Watchdog)
- `keys`: the lab's key pair, pinned host keys (KnownHosts), `fetch_host_key` for lab.trust
- `commands`: SshCommands, remote commands that a deadline stops (process group and all)
- `transfer`: FileTransfer, uploads and downloads checked by sha256
- `jobs`: RemoteJobs, detached jobs that outlive the connection
- `session`: `connect`, and SshSession, the connection with all of the above
"""

from kbisect.lab.ssh.commands import CommandResult
from kbisect.lab.ssh.jobs import JOBS_DIR, JobHandle, JobOutput, JobState
from kbisect.lab.ssh.keys import (
    HostKeyChanged,
    HostKeyUnknown,
    KnownHosts,
    fetch_host_key,
    fingerprint,
    generate_keypair,
    host_key_name,
    load_private_key,
    parse_public_key,
)
from kbisect.lab.ssh.net import SshTarget
from kbisect.lab.ssh.session import SshSession, connect

__all__ = [
    "JOBS_DIR",
    "CommandResult",
    "HostKeyChanged",
    "HostKeyUnknown",
    "JobHandle",
    "JobOutput",
    "JobState",
    "KnownHosts",
    "SshSession",
    "SshTarget",
    "connect",
    "fetch_host_key",
    "fingerprint",
    "generate_keypair",
    "host_key_name",
    "load_private_key",
    "parse_public_key",
]
