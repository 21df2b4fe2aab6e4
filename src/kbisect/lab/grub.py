"""Boot through grub2, over SSH: how a machine with a disk and a bootloader boots a build.

The build's kernel, modules and initrd are installed on the host, one menu entry (multiboot2 Xen
+ module2 dom0) is written to a file that grub.cfg reads at boot (through a grub.d script
installed once), `grub-reboot` arms that entry for the next boot only, and the host reboots. A
build that hangs is power-cycled into the saved default entry (the known-good kernel), so a bad
build never locks the machine out. Each install removes old kbisect builds
(kbisect.lab.housekeeping); `remove_entry` takes kbisect's entry out of grub on request. Used by
rack machines; any host kind that boots Xen through grub from its own disk can use it too.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import tarfile
from pathlib import Path

from kbisect.build.store import Artifact
from kbisect.config.model import SshOptions
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.housekeeping import (
    CONFIG_PREFIX,
    INITRD_PREFIX,
    KERNEL_PREFIX,
    MODULES_MARK,
    Removal,
    kept_builds,
    list_installed,
    removal,
    remove,
)
from kbisect.lab.probe import BUILD_PARAM, LOADING_MARK, Probe
from kbisect.lab.ssh import SshSession
from kbisect.lab.ssh.commands import sh_script

_SHORT = 60.0
_SLOW = 300.0  # building an initrd, update-grub
_REBOOT_ANSWER = 30.0
# The uploads of one install: their own bound, not the boot timeout (which bounds a boot).
TRANSFER_SECONDS = 600.0


class GrubBoot:
    """Installs builds on one host and boots them once through a grub2 entry.

    `options` says where the host keeps kernels, modules and its grub.d script and which
    commands it has; `scratch` is a local directory for the modules tarball."""

    def __init__(self, host: str, options: SshOptions, scratch: Path) -> None:
        self.host = host
        self.options = options
        self.scratch = scratch

    @staticmethod
    def entry_id(artifact: Artifact) -> str:
        return f"kbisect-{artifact.key}"

    def install(self, session: SshSession, artifact: Artifact, running: Probe) -> None:
        """Install the build and arm its entry for the next boot. `running` is what the host
        runs now: its dom0 command line is the default for the build's."""
        release = str(artifact.meta.get("kernel_release", ""))
        if not release:
            raise InfraError(f"build {artifact.key} has no kernel_release in its meta.json")
        if release == running.get("release") and running.build is None:
            raise InfraError(  # installing would replace the modules of the host's own kernel
                f"{self.host}: build {artifact.key} has the release of the kernel the host runs "
                f"({release}), not a kbisect build: refusing to overwrite its modules"
            )
        transfers = Deadline(TRANSFER_SECONDS)
        self.tidy(session, running, installing=artifact.key, keep=self.options.keep_kernels)
        kernel, initrd = self._install_files(session, artifact, release, transfers)
        entry = grub_entry(
            self.entry_id(artifact),
            artifact.key,
            release,
            xen=self.options.xen_image,
            xen_cmdline=self.options.xen_cmdline,
            kernel=kernel,
            initrd=initrd,
            dom0_cmdline=self._dom0_cmdline(running, artifact),
            boot_mount=self._mount_point(session, self._boot_dir),
        )
        session.upload_bytes(entry.encode(), self.entries_file, transfers, mode=0o644)
        self._ensure_script(session, transfers)
        self._arm(session, artifact)

    @property
    def entries_file(self) -> str:
        """The file holding kbisect's menu entry, read by grub at boot (see GRUB_SCRIPT)."""
        return f"{self.options.grub_dir.rstrip('/')}/{ENTRIES_FILE}"

    def _ensure_script(self, session: SshSession, transfers: Deadline) -> None:
        """Install the grub.d script that makes grub.cfg read kbisect's entries file, and run
        update-grub, unless the host has it already: then a deploy needs no update-grub."""
        current = session.run(["cat", self.options.grub_script], Deadline(_SHORT))
        if current.ok and current.stdout == GRUB_SCRIPT.encode():
            return
        path = self.options.grub_script
        session.upload_bytes(GRUB_SCRIPT.encode(), path, transfers, mode=0o755)
        self._run(session, self.options.commands.update_grub, "updating grub", Deadline(_SLOW))

    @property
    def _boot_dir(self) -> str:
        return self.options.boot_dir.rstrip("/") or "/"

    def _install_files(
        self, session: SshSession, artifact: Artifact, release: str, transfers: Deadline
    ) -> tuple[str, str | None]:
        """Kernel, modules and (where the host builds one) initrd; returns their paths."""
        boot, modules_dir = self._boot_dir, self.options.modules_dir
        kernel = f"{boot}/{KERNEL_PREFIX}{artifact.key}"
        initrd = f"{boot}/{INITRD_PREFIX}{artifact.key}"
        grub_dir = self.options.grub_dir
        self._run(session, ["mkdir", "-p", boot, modules_dir, grub_dir], "preparing directories")
        session.upload(artifact.bzimage, kernel, transfers, mode=0o644)
        config = artifact.path / "config"
        if config.is_file():  # as `make install` does: mkinitramfs reads it
            session.upload(config, f"{boot}/{CONFIG_PREFIX}{release}", transfers, mode=0o644)
        tarball = self.scratch / "modules.tar.gz"
        _pack_modules(artifact, release, tarball)
        token = secrets.token_hex(4)
        remote_tar = f"/tmp/kbisect-modules-{artifact.key}-{token}.tar.gz"  # noqa: S108
        session.upload(tarball, remote_tar, transfers)
        tarball.unlink(missing_ok=True)
        self._run_sh(  # marked as kbisect's, so that a later deploy may remove it
            session,
            'rm -rf "$2/$3" && tar -xzf "$1" -C "$2" && rm -f "$1" && '
            'printf "%s\\n" "$4" > "$2/$3/$5"',
            [remote_tar, modules_dir, release, artifact.key, MODULES_MARK],
            "installing modules",
        )
        make_initrd = self.options.commands.initrd
        if make_initrd is None:
            return kernel, None
        argv = [w.replace("{release}", release).replace("{output}", initrd) for w in make_initrd]
        self._run(session, argv, "building the initrd", Deadline(_SLOW))
        return kernel, initrd

    def tidy(
        self, session: SshSession, running: Probe, *, installing: str | None, keep: int
    ) -> Removal:
        """Remove kbisect's builds but the `keep` newest (counting `installing`, the build
        about to be installed) and the one running; returns what was removed."""
        boot, modules_dir = self._boot_dir, self.options.modules_dir.rstrip("/") or "/"
        installed = list_installed(session, boot, modules_dir)
        kept = kept_builds(installed, keep=keep, installing=installing, booted=running.build)
        gone = removal(
            installed,
            kept,
            boot_dir=boot,
            modules_dir=modules_dir,
            running_release=running.get("release"),
        )
        remove(session, self.host, gone)
        return gone

    def remove_entry(self, session: SshSession) -> bool:
        """Take kbisect's entry out of grub (its grub.d script, then update-grub); False if
        there was none. The host's default entry is left as it is."""
        script, entries = self.options.grub_script, self.entries_file
        had_entry = session.run(["test", "-e", entries], Deadline(_SHORT)).ok
        self._run(session, ["rm", "-f", "--", entries], "removing kbisect's grub entry")
        if session.run(["test", "-e", script], Deadline(_SHORT)).ok:
            self._run(session, ["rm", "-f", "--", script], "removing kbisect's grub.d script")
            self._run(session, self.options.commands.update_grub, "updating grub", Deadline(_SLOW))
            return True
        return had_entry

    def _arm(self, session: SshSession, artifact: Artifact) -> None:
        """The build's entry for the next boot only; the fallback entry for every boot after."""
        commands = self.options.commands
        if self.options.grub_fallback_entry:
            self._run(
                session,
                [*commands.grub_set_default, self.options.grub_fallback_entry],
                "setting the fallback grub entry",
            )
        self._run(
            session,
            [*commands.grub_reboot, self.entry_id(artifact)],
            "arming the one-time grub entry",
        )

    def _dom0_cmdline(self, running: Probe, artifact: Artifact) -> str:
        """The configured dom0 command line, else the running one; plus the build's key."""
        if self.options.dom0_cmdline is not None:
            words = self.options.dom0_cmdline.split()
        else:
            words = [
                w
                for w in running.get("dom0_cmdline").split()
                if not w.startswith(("BOOT_IMAGE=", f"{BUILD_PARAM}=", "initrd="))
            ]
        return " ".join([*words, f"{BUILD_PARAM}={artifact.key}"])

    def _mount_point(self, session: SshSession, path: str) -> str:
        """Where the partition holding `path` is mounted ("/" when df cannot tell)."""
        result = session.run(["df", "-P", path], Deadline(_SHORT))
        lines = result.text().splitlines()
        if not result.ok or len(lines) < 2:
            return "/"
        return lines[-1].split()[-1]

    def reboot(self, session: SshSession) -> None:
        """Reboot the host into the armed entry."""
        # The connection may drop before the command answers: that is the reboot working.
        with contextlib.suppress(InfraError):
            result = session.run(self.options.commands.reboot, Deadline(_REBOOT_ANSWER))
            if not result.ok:
                raise InfraError(
                    f"{self.host}: {shlex.join(self.options.commands.reboot)} failed "
                    f"({result.status}): {result.stderr.decode(errors='replace').strip()[-200:]}"
                )

    def _run(
        self, session: SshSession, argv: list[str], what: str, deadline: Deadline | None = None
    ) -> None:
        result = session.run(argv, deadline or Deadline(_SHORT))
        if not result.ok:
            raise InfraError(
                f"{self.host}: {what} failed: `{shlex.join(argv)}` exited {result.status}: "
                f"{result.stderr.decode(errors='replace').strip()[-300:]}"
            )

    def _run_sh(self, session: SshSession, script: str, args: list[str], what: str) -> None:
        self._run(session, sh_script(script, *args), what)


def _pack_modules(artifact: Artifact, release: str, out: Path) -> None:
    """lib/modules/RELEASE of the build as RELEASE/... in a gzip'd tarball."""
    tree = artifact.modules / "lib" / "modules" / release
    if not tree.is_dir():
        raise InfraError(f"build {artifact.key} has no modules for {release} ({tree})")
    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        tar.add(tree, arcname=release)


def _grub_path(path: str, mount: str) -> str:
    """A path as grub sees it: relative to the root of the partition holding it."""
    if mount in ("", "/"):
        return path
    return "/" + path[len(mount) :].lstrip("/") if path.startswith(mount + "/") else path


# The grub.d script kbisect installs once: grub.cfg then reads kbisect's entries file at boot
# (as Debian's 41_custom reads custom.cfg), so a deploy rewrites that file and needs no
# update-grub (53 s under TCG, seconds on hardware, and one more thing that can fail).
ENTRIES_FILE = "kbisect.cfg"
GRUB_SCRIPT = (
    "#!/bin/sh\n"
    "# Written by kbisect: grub reads the entry of the build kbisect deployed last from\n"
    f"# {ENTRIES_FILE} in its own directory. `kbisect lab.clean HOST` removes both.\n"
    "cat <<'KBISECT_EOF'\n"
    f"if [ -f ${{config_directory}}/{ENTRIES_FILE} ]; then\n"
    f"\tsource ${{config_directory}}/{ENTRIES_FILE}\n"
    "fi\n"
    "KBISECT_EOF\n"
)


def grub_entry(
    entry_id: str,
    build_key: str,
    release: str,
    *,
    xen: str,
    xen_cmdline: str,
    kernel: str,
    initrd: str | None,
    dom0_cmdline: str,
    boot_mount: str,
) -> str:
    """One menu entry booting Xen with the build as dom0. It says `kbisect: loading build KEY`
    on the console, the evidence that grub picked it when the kernel then does not boot."""
    k = _grub_path(kernel, boot_mount)
    lines = [
        f"# Written by kbisect for build {build_key}; replaced by the next deploy.",
        f"menuentry 'kbisect {build_key}: Xen, dom0 {release}' --id {entry_id} {{",
        "\tinsmod part_gpt",
        "\tinsmod part_msdos",
        "\tinsmod ext2",
        "\tinsmod multiboot2",
        f"\tsearch --no-floppy --file --set=root {k}",
        f"\techo '{LOADING_MARK} {build_key}'",
        f"\tmultiboot2 {_grub_path(xen, boot_mount)} {xen_cmdline}".rstrip(),
        f"\tmodule2 {k} {dom0_cmdline}".rstrip(),
    ]
    if initrd:
        lines.append(f"\tmodule2 --nounzip {_grub_path(initrd, boot_mount)}")
    lines.append("}")
    return "\n".join(lines) + "\n"
