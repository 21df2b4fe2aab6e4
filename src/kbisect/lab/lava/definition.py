"""A LAVA job definition for one build: deploy Xen, the dom0 kernel and kbisect's initramfs to a
QEMU device, boot Xen with the build as dom0, and run commands on its console (LAVA's interactive
test), each named command a LAVA test case.

Xen boots in a `qemu` device job when one image's `image_arg` carries QEMU's whole multiboot line
(`-kernel {xen} -append XEN-ARGS -initrd "{kernel} DOM0-ARGS,{initrd}"`) and the other images add
nothing (`image_arg: ''`). Jobs need `context: {arch: amd64}` and no `quiet` on the dom0 command
line: LAVA waits for "Linux version" before the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kbisect.config.model import LavaOptions, QemuOptions
from kbisect.lab.qemu import dom0_cmdline, multiboot_modules, xen_cmdline

SUITE = "kbisect"  # the interactive test's name: LAVA's suite is "0_kbisect"
_DEPLOY_SECONDS = 300
_SLACK_SECONDS = 60


@dataclass(frozen=True)
class ConsoleCommand:
    """One command typed at the dom0 console. With a name it is a LAVA test case: it passes
    when `success` shows, fails when `failure` does (patterns are regular expressions, which
    must not match the echoed command)."""

    command: str
    name: str | None = None
    success: str | None = None
    failure: str | None = None
    fatal: str | None = None  # a pattern that ends the job as a TestError (e.g. a panic)


@dataclass(frozen=True)
class BootFiles:
    """The files a job deploys, on a path the LAVA worker can read (file://)."""

    xen: Path
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class JobRequest:
    """Everything a job definition says."""

    name: str
    files: BootFiles
    dom0_extra: str  # e.g. kbisect.build=KEY
    prompt: str
    commands: tuple[ConsoleCommand, ...]
    boot_seconds: int
    test_seconds: int


def image_arg(opts: QemuOptions, dom0_extra: str) -> str:
    """QEMU's multiboot arguments, with LAVA's {xen}, {kernel} and {initrd} placeholders."""
    modules = multiboot_modules(
        (Path("{kernel}"), dom0_cmdline(opts, dom0_extra)), (Path("{initrd}"), "")
    )
    return f'-kernel {{xen}} -append "{xen_cmdline(opts)}" -initrd "{modules}"'


def render(request: JobRequest, lava: LavaOptions, opts: QemuOptions) -> str:
    """The job definition as YAML text."""
    job: dict[str, Any] = {
        "device_type": lava.device_type,
        "job_name": request.name,
        "priority": lava.priority,
        "visibility": "public",
        "context": {"arch": "amd64", "memory": opts.memory_mb},
        "timeouts": {
            "job": {"seconds": _DEPLOY_SECONDS + request.boot_seconds + request.test_seconds},
            "action": {"seconds": max(request.boot_seconds, request.test_seconds)},
            "connection": {"seconds": request.test_seconds},
        },
        "actions": [
            {"deploy": _deploy(request, opts)},
            {"boot": _boot(request)},
            {"test": _test(request)},
        ],
    }
    if lava.tags:
        job["tags"] = list(lava.tags)
    return yaml.safe_dump(job, sort_keys=False, width=1000)


def _deploy(request: JobRequest, opts: QemuOptions) -> dict[str, Any]:
    files = request.files
    return {
        "to": "tmpfs",
        "timeout": {"seconds": _DEPLOY_SECONDS},
        "images": {
            "xen": {"url": files.xen.as_uri(), "image_arg": image_arg(opts, request.dom0_extra)},
            "kernel": {"url": files.kernel.as_uri(), "image_arg": ""},
            "initrd": {"url": files.initrd.as_uri(), "image_arg": ""},
        },
    }


def _boot(request: JobRequest) -> dict[str, Any]:
    return {
        "method": "qemu",
        "media": "tmpfs",
        "timeout": {"seconds": request.boot_seconds},
        "prompts": [request.prompt],
    }


def _test(request: JobRequest) -> dict[str, Any]:
    return {
        "timeout": {"seconds": request.test_seconds + _SLACK_SECONDS},
        "interactive": [
            {
                "name": SUITE,
                "prompts": [request.prompt],
                "script": [_script_step(c) for c in request.commands],
            }
        ],
    }


def _script_step(command: ConsoleCommand) -> dict[str, Any]:
    step: dict[str, Any] = {"command": command.command}
    if command.name:
        step["name"] = command.name
    if command.success:
        step["successes"] = [{"message": command.success}]
    failures: list[dict[str, Any]] = []
    if command.failure:
        failures.append({"message": command.failure})
    if command.fatal:
        failures.append({"message": command.fatal, "exception": "TestError"})
    if failures:
        step["failures"] = failures
    return step
