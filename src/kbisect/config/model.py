"""The configuration model: what each YAML file may say, as typed objects.

Field docs here are the single source of the configuration reference in docs/configuration.md
(`kbisect config.reference` prints it; `python -m kbisect.cli.docs` writes it there). Rules that
span files live in `kbisect.config.project`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kbisect.config.schema import Model, doc
from kbisect.config.text import shown

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
Expectation = Literal["pass", "fail", "skip", "flaky"]
LOOPBACK = ("127.0.0.1", "localhost")
DAY = 86_400
WEEK = 7 * DAY


def _name_problems(name: str) -> list[tuple[str, str]]:
    if NAME_RE.fullmatch(name):  # not match with `$`, which also takes "qemu\n"
        return []
    return [("name", f"expected letters, digits, '.', '_' or '-', got {shown(name)}")]


def _dom0_memory_problems(dom0_mb: int, machine_mb: int) -> list[tuple[str, str]]:
    """Xen needs memory of its own beside dom0's."""
    return [("dom0_memory_mb", "expected less than memory_mb")] if dom0_mb >= machine_mb else []


@dataclass(kw_only=True)
class Settings(Model):
    """Tool-wide settings (key `settings` in configs/*.yaml; at most once)."""

    cache_dir: str | None = doc(
        "Cache for mirrors, worktrees, build trees and artifacts. Overridden by $KBISECT_CACHE; "
        "default $XDG_CACHE_HOME/kbisect. Must be outside the repository.",
        None,
    )
    results_dir: str = doc(
        "Where runs are stored, relative to the project root. Overridden by $KBISECT_RESULTS.",
        "results",
    )
    build_jobs: int | None = doc(
        "make -jN for builds; default: the number of cores.", None, bounds=(1, 1024)
    )
    artifact_limit_gb: float = doc(
        "Size limit of the build artifact store (LRU pruning).", 40.0, bounds=(0.01, 100_000)
    )
    default_tree: str | None = doc(
        "Tree (a name under `trees`) for tasks given no `--tree`; default: the only tree.", None
    )
    default_profile: str | None = doc(
        "Build profile (a name under `profiles`) for tasks given no `--profile`; default: the "
        "only profile.",
        None,
    )
    store: str | None = doc(
        "Results store and host leases shared by every controller: a `postgresql://` URL "
        "(needs psycopg 3: `pip install 'kbisect[postgresql]'`). Overridden by $KBISECT_STORE; "
        "default: the SQLite file kbisect.sqlite in results_dir, with leases on this machine.",
        None,
    )
    lease_timeout: int = doc(
        "Seconds a host lease in a shared store outlives its holder's last heartbeat (a holder "
        "heartbeats every third of it): how long a host stays lost to a controller that died.",
        60,
        bounds=(3, DAY),
    )

    def check(self) -> list[tuple[str, str]]:
        if self.store is not None and not self.store.startswith(("postgresql://", "postgres://")):
            return [("store", f"expected a postgresql:// URL, got {shown(self.store)}")]
        return []


@dataclass(kw_only=True)
class Tree(Model):
    """A kernel tree (list `trees` in configs/*.yaml): a git repository or Debian source package."""

    name: str = doc("Name used by pipelines and `--tree`.")
    url: str | None = doc("Git URL or local path, mirrored into the cache.", None)
    debian_package: str | None = doc(
        "Debian source package whose point releases are imported, e.g. linux-source-6.1.", None
    )
    worktree_slots: int = doc("Reusable worktree slots for this tree.", 2, bounds=(1, 64))

    def check(self) -> list[tuple[str, str]]:
        problems = _name_problems(self.name)
        if (self.url is None) == (self.debian_package is None):
            problems.append(("", "expected exactly one of 'url' or 'debian_package'"))
        return problems


@dataclass(kw_only=True)
class BuildProfile(Model):
    """How to configure and build a kernel (list `profiles` in configs/*.yaml)."""

    name: str = doc("Name used by pipelines and `--profile`.")
    base: str = doc(
        "Starting config: a make target (tinyconfig, defconfig, allnoconfig) or a config file "
        "path relative to configs/."
    )
    fragments: list[str] = doc(
        "Kconfig fragments relative to configs/, merged in order; every symbol they set must "
        "survive olddefconfig.",
        factory=list,
    )
    arch: str = doc("ARCH for make.", "x86_64")
    targets: list[str] = doc("make targets.", factory=lambda: ["bzImage", "modules"])
    build_timeout: int = doc(
        "Seconds a build may take before it is stopped.", 3600, bounds=(1, WEEK)
    )

    MAKE_BASES = ("tinyconfig", "defconfig", "allnoconfig", "allmodconfig", "allyesconfig")

    def check(self) -> list[tuple[str, str]]:
        return _name_problems(self.name)


# HOST[:PORT][/LIMIT][,lzo] over TCP or [USER]@HOST[/LIMIT][,lzo] over SSH (see distcc(1))
DISTCC_HOST_RE = re.compile(
    r"(?:[A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.-]*|[A-Za-z0-9][A-Za-z0-9.-]*(?::\d{1,5})?)"
    r"(?:/\d{1,4})?(?:,lzo)?"
)
DISTCC_DEFAULT_LIMIT = 4  # distcc's own default number of jobs per host


@dataclass(kw_only=True)
class Distcc(Model):
    """Compile on other machines with distcc, under ccache (key `distcc` in configs/builds.yaml;
    at most once; absent: every build compiles here). docs/builds.md#distributed-builds."""

    hosts: list[str] = doc(
        "distccd builders, each HOST[:PORT][/LIMIT][,lzo] (TCP) or [USER]@HOST[/LIMIT] (over "
        "SSH) as in DISTCC_HOSTS; LIMIT: jobs it takes at once, default 4. Each must run the "
        "same gcc as this machine: the build key names this machine's toolchain.",
        non_empty=True,
    )
    jobs: int | None = doc(
        "make -jN while distributing (`--jobs` still wins); default: the hosts' limits added "
        "up, plus this machine's cores.",
        None,
        bounds=(1, 4096),
    )

    def check(self) -> list[tuple[str, str]]:
        return [
            (f"hosts[{i}]", f"expected HOST[:PORT][/LIMIT] or USER@HOST[/LIMIT], got {shown(host)}")
            for i, host in enumerate(self.hosts)
            if not DISTCC_HOST_RE.fullmatch(host)
        ]

    def host_limits(self) -> int:
        """Jobs the hosts take at once, added up."""
        total = 0
        for host in self.hosts:
            limit = host.split(",")[0].partition("/")[2]
            total += int(limit) if limit else DISTCC_DEFAULT_LIMIT
        return total


@dataclass(kw_only=True)
class QemuOptions(Model):
    """The embedded Xen host under QEMU."""

    memory_mb: int = doc("Guest memory for QEMU (-m).", 2048, bounds=(128, 1_048_576))
    cpus: int = doc("Guest CPUs (-smp).", 2, bounds=(1, 255))
    dom0_memory_mb: int = doc("dom0_mem for Xen.", 1024, bounds=(64, 1_048_576))
    numa_fake: int = doc("numa=fake=N on the dom0 command line (0 = off).", 2, bounds=(0, 64))
    numa_balancing: bool = doc("numa_balancing=enable on the dom0 command line.", True)
    xen_image: str = doc("Xen hypervisor image (gzip or ELF).", "/boot/xen-4.17-amd64.gz")
    extra_dom0_cmdline: str = doc("Appended to the dom0 kernel command line.", "")
    standby: Literal["auto", "on", "off"] = doc(
        "Boot the next build in a second QEMU (SCHED_IDLE, same memory) while a job runs, so "
        "a nightly's next deploy is a switch. auto: only where this machine has at least twice "
        "`cpus` cores (with fewer, the boot slows the job: on 2 cores 50 s instead of 53 s for "
        "the four variants, but jobs ran 1.6 times longer).",
        "auto",
    )

    def check(self) -> list[tuple[str, str]]:
        return _dom0_memory_problems(self.dom0_memory_mb, self.memory_mb)


@dataclass(kw_only=True)
class RackCommands(Model):
    """Commands run on a rack machine (argv; found on the host's PATH)."""

    grub_reboot: list[str] = doc(
        "Boots a grub2 entry once (the entry id is appended).", factory=lambda: ["grub-reboot"]
    )
    grub_set_default: list[str] = doc(
        "Makes an entry the saved default (used with grub_fallback_entry).",
        factory=lambda: ["grub-set-default"],
    )
    update_grub: list[str] = doc(
        "Regenerates grub.cfg after kbisect wrote its grub.d script.",
        factory=lambda: ["update-grub"],
    )
    reboot: list[str] = doc("Reboots the host.", factory=lambda: ["reboot"])
    initrd: list[str] | None = doc(
        "Builds the dom0 initrd; {release} and {output} are replaced. null: boot without one.",
        factory=lambda: ["mkinitramfs", "-o", "{output}", "{release}"],
    )


@dataclass(kw_only=True)
class SshOptions(Model):
    """How to reach a rack machine over SSH, and where its boot files live."""

    address: str = doc("Host name or address.")
    port: int = doc("SSH port.", 22, bounds=(1, 65535))
    user: str = doc("Login user.", "root")
    key: str | None = doc("Private key file (ed25519); default: the lab key.", None)
    power_cycle: list[str] | None = doc(
        "Command (argv) run on this machine to power-cycle the host when it does not answer, "
        "e.g. [ipmitool, -H, bmc1, power, cycle].",
        None,
    )
    grub_fallback_entry: str | None = doc(
        "grub2 entry that boots a known-good kernel; made the saved default before each deploy "
        "so that a hang falls back to it. null: keep the host's own default.",
        None,
    )
    xen_image: str = doc("Xen image on the host (grub multiboot2).", "/boot/xen-4.17-amd64.gz")
    xen_cmdline: str = doc("Xen command line.", "loglvl=all guest_loglvl=all")
    dom0_cmdline: str | None = doc(
        "dom0 kernel command line; default: the running kernel's, without BOOT_IMAGE.", None
    )
    boot_dir: str = doc("Where kernels and initrds are installed on the host.", "/boot")
    modules_dir: str = doc("Where module trees are installed on the host.", "/lib/modules")
    grub_script: str = doc(
        "The grub.d script kbisect installs once (then update-grub), which makes grub.cfg "
        "read kbisect's entry from `grub_dir`/kbisect.cfg at boot: a deploy rewrites that "
        "file and needs no update-grub.",
        "/etc/grub.d/42_kbisect",
    )
    grub_dir: str = doc(
        "grub's directory on the host (/boot/grub on Debian, /boot/grub2 on Fedora).",
        "/boot/grub",
    )
    commands: RackCommands = doc("Boot and power commands.", factory=RackCommands)
    console: list[str] | None = doc(
        "Command (argv) run on this machine whose output is the host's serial console, e.g. "
        "[ipmitool, -I, lanplus, -H, bmc1, -U, admin, -f, /etc/kbisect/bmc1.pw, sol, activate], "
        "a conserver client, or [tail, -F, -n, '0', /var/log/rack1.console]. kbisect runs it "
        "while it deploys to the host and runs jobs on it, and keeps what it printed with the "
        "results (a kernel that does not boot leaves its console there). null: no console.",
        None,
    )
    keep_kernels: int = doc(
        "kbisect builds kept installed on the host, the one being deployed included: each "
        "deploy removes older kbisect kernels, initrds and module trees (never the build the "
        "host runs, nor files kbisect did not install), so that /boot does not fill up.",
        3,
        bounds=(1, 1000),
    )

    def check(self) -> list[tuple[str, str]]:
        paths = ("boot_dir", "modules_dir", "grub_script", "grub_dir", "xen_image")
        absolute = "expected an absolute path on the host"
        problems = [(key, absolute) for key in paths if not str(getattr(self, key)).startswith("/")]
        if self.console is not None and not self.console:
            problems.append(("console", "expected a command (a list of words), or null"))
        return problems


@dataclass(kw_only=True)
class EmulatedMachine(Model):
    """A rack machine that kbisect itself emulates: a QEMU virtual machine booting Debian 12,
    Xen and GRUB2 from its own disk. It is reached, deployed to and power-cycled exactly like
    hardware (through its `ssh` section); only this section says that kbisect starts it."""

    suite: str = doc("Debian suite the disk image is built from (mmdebstrap).", "bookworm")
    mirror: str = doc("Debian mirror for the image.", "http://deb.debian.org/debian")
    extra_packages: list[str] = doc("Packages added to the image's standard set.", factory=list)
    disk_gb: int = doc("Size of the machine's disk (sparse).", 4, bounds=(2, 1024))
    memory_mb: int = doc("Machine memory (-m).", 2048, bounds=(512, 1_048_576))
    cpus: int = doc("Machine CPUs (-smp).", 2, bounds=(1, 255))
    dom0_memory_mb: int = doc(
        "dom0_mem on the image's Xen command line.", 1024, bounds=(256, 1_048_576)
    )
    dom0_cmdline: str = doc(
        "Added to the dom0 command line of the image's Xen entries (the known-good kernel's); "
        "a PV dom0 sees one NUMA node unless told to fake two.",
        "numa=fake=2 numa_balancing=enable",
    )

    def check(self) -> list[tuple[str, str]]:
        return _dom0_memory_problems(self.dom0_memory_mb, self.memory_mb)


@dataclass(kw_only=True)
class LavaOptions(Model):
    """A LAVA lab: kbisect submits one LAVA job per cell (boot the build with Xen, run the job as
    interactive test commands) through the server's REST API, and reads the outcome back."""

    url: str = doc("The LAVA server's address (its REST API is under api/v0.2/).")
    device_type: str = doc("Device type the jobs ask for (a QEMU device type).", "qemu")
    token_file: str | None = doc(
        "File holding the user's API token (`lava-server manage tokens add`); overridden by "
        "$KBISECT_LAVA_TOKEN. null: only that variable.",
        None,
    )
    priority: Literal["high", "medium", "low"] = doc("Priority of kbisect's jobs.", "medium")
    tags: list[str] = doc("Device tags the jobs require.", factory=list)
    queue_timeout: int = doc(
        "Seconds a job may wait for a device before kbisect cancels it (ERROR).",
        600,
        bounds=(1, WEEK),
    )

    def check(self) -> list[tuple[str, str]]:
        if re.fullmatch(r"https?://[^/\s]+/?(\S*)", self.url):
            return []
        return [("url", f"expected an http:// or https:// address, got {shown(self.url)}")]


@dataclass(kw_only=True)
class Host(Model):
    """A Xen test host (list `hosts` in configs/*.yaml)."""

    name: str = doc("Name used by pipelines and `--host`.")
    kind: Literal["qemu", "ssh", "lava"] = doc(
        "qemu: the embedded host; ssh: a rack machine; lava: a device type of a LAVA lab."
    )
    qemu: QemuOptions | None = doc(
        "Options for kind qemu; for kind lava, the emulated machine its jobs ask for.", None
    )
    ssh: SshOptions | None = doc("Options for kind ssh (required there).", None)
    lava: LavaOptions | None = doc("Options for kind lava (required there).", None)
    machine: EmulatedMachine | None = doc(
        "Kind ssh only: the host is a virtual machine that kbisect builds and starts on this "
        "machine (`kbisect lab.power`); its ssh address must be loopback.",
        None,
    )
    boot_timeout: int = doc(
        "Seconds from power-on or reboot to a working SSH login.", 300, bounds=(1, DAY)
    )
    max_power_cycles: int = doc(
        "Power cycles tried before the host is marked broken.", 2, bounds=(0, 100)
    )

    def check(self) -> list[tuple[str, str]]:
        problems = _name_problems(self.name)
        if self.kind == "ssh" and self.ssh is None:
            problems.append(("", "kind 'ssh' needs an 'ssh' section"))
        if self.kind == "qemu" and self.ssh is not None:
            problems.append(("ssh", "only for kind 'ssh'"))
        if self.kind == "ssh" and self.qemu is not None:
            problems.append(("qemu", "only for kind 'qemu'"))
        if self.kind == "lava" and self.lava is None:
            problems.append(("", "kind 'lava' needs a 'lava' section"))
        if self.kind != "lava" and self.lava is not None:
            problems.append(("lava", "only for kind 'lava'"))
        if self.kind == "lava" and self.ssh is not None:
            problems.append(("ssh", "only for kind 'ssh'"))
        if self.machine is not None and self.kind != "ssh":
            problems.append(("machine", "only for kind 'ssh'"))
        elif self.machine is not None and self.ssh and self.ssh.address not in LOOPBACK:
            problems.append(("ssh.address", "expected a loopback address for an emulated machine"))
        return problems

    def qemu_options(self) -> QemuOptions:
        return self.qemu or QemuOptions()


@dataclass(kw_only=True)
class Job(Model):
    """What runs on a booted host (list `jobs` in configs/*.yaml)."""

    name: str = doc("Name used by pipelines and `--job`.")
    program: str = doc("Program to run: 'gntstress' (built and shipped by kbisect) or a path.")
    args: list[str] = doc("Arguments of the program.", factory=list)
    modules: list[str] = doc("Kernel modules loaded before the job.", factory=list)
    sysctl: dict[str, str] = doc("sysctl settings applied before the job.", factory=dict)
    timeout: int = doc("Seconds the job may run.", 600, bounds=(1, WEEK))
    repeat: int = doc("Runs per cell.", 1, bounds=(1, 1000))

    def check(self) -> list[tuple[str, str]]:
        return _name_problems(self.name)


@dataclass(kw_only=True)
class ConfigFile(Model):
    """One file under configs/: any of these sections; names are unique across all files."""

    settings: Settings | None = doc("Tool-wide settings.", None)
    trees: list[Tree] = doc("Kernel trees.", factory=list)
    profiles: list[BuildProfile] = doc("Build profiles.", factory=list)
    distcc: Distcc | None = doc("Distributed compiles (off when absent).", None)
    hosts: list[Host] = doc("Lab hosts.", factory=list)
    jobs: list[Job] = doc("Jobs.", factory=list)


@dataclass(kw_only=True)
class VariantOrigin(Model):
    """The posting a variant was imported from (`kbisect variants.import`)."""

    subject: str = doc("Subject of its cover letter, else of its first patch.")
    author: str = doc("From: of that message.")
    date: str = doc("Its date (ISO 8601).")
    message_id: str = doc("Its Message-Id, as <...>.")


@dataclass(kw_only=True)
class FlakyRange(Model):
    """A flaky subtest's expected failure rate (a value of a variant's `expect`), e.g.
    `churn: {flaky: [0.05, 0.5]}`: it fails in 5% to 50% of its runs. A subtest is unexpected
    when the 95% interval of the rate it showed lies wholly outside the range."""

    flaky: list[float] = doc(
        "The lowest and highest failure rate expected, as fractions of runs.", bounds=(0, 1)
    )

    def check(self) -> list[tuple[str, str]]:
        if len(self.flaky) != 2:
            return [("flaky", f"expected two rates [LOW, HIGH], got {len(self.flaky)}")]
        low, high = self.flaky
        if low > high:  # each is from 0 to 1 (the reader checks the bounds)
            return [("flaky", f"expected LOW <= HIGH, got [{low:g}, {high:g}]")]
        return []

    def __str__(self) -> str:
        low, high = self.flaky
        return f"flaky {low * 100:g}-{high * 100:g}%"


@dataclass(kw_only=True)
class Variant(Model):
    """One way of patching the tree."""

    name: str = doc("Name used by pipelines and `--variant`.")
    description: str = doc("One line: what this variant does.")
    patches: list[str] = doc("Patch files in this directory, applied in order.", factory=list)
    expect: dict[str, Expectation | FlakyRange] = doc(
        "Expected outcome per stress subtest: pass, fail, skip, or flaky (passes in some runs "
        "and fails in others, at any rate), or `{flaky: [LOW, HIGH]}` for a failure rate in "
        "that range (see `variants[].expect.SUBTEST`); key 'default' covers the others.",
        factory=dict,
    )
    origin: VariantOrigin | None = doc(
        "Where it was posted, for variants imported from a mail thread.", None
    )

    def check(self) -> list[tuple[str, str]]:
        return _name_problems(self.name)


@dataclass(kw_only=True)
class Experiment(Model):
    """A patch-variant experiment: seeds/NAME/experiment.yaml."""

    name: str = doc("Experiment name.")
    title: str = doc("One line.")
    question: str = doc("What the experiment asks.")
    origin: str = doc("Where it comes from (threads, commits).", "")
    tree: str | None = doc("The tree the patches are written for.", None)
    variants: list[Variant] = doc("The variants; names unique within the experiment.")

    def check(self) -> list[tuple[str, str]]:
        problems = _name_problems(self.name)
        if not self.variants:
            problems.append(("variants", "expected at least one variant"))
        return problems


@dataclass(kw_only=True)
class RevisionSet(Model):
    """Revisions of one tree to test."""

    tree: str = doc("Tree name.")
    revisions: list[str] = doc("Named revisions (tags, branches, commit ids).", factory=list)
    newest_tags: int = doc("Also the N newest tags of the tree.", 0, bounds=(0, 1000))

    def check(self) -> list[tuple[str, str]]:
        if not self.revisions and self.newest_tags < 1:
            return [("", "expected 'revisions' or 'newest_tags'")]
        return []


@dataclass(kw_only=True)
class VariantSet(Model):
    """Variants of one experiment to test."""

    experiment: str = doc("Experiment name (a directory under seeds/).")
    variants: list[str] | None = doc("Variant names; default: all of them.", None)


@dataclass(kw_only=True)
class AutoBisect(Model):
    """When a new regression starts a bisection."""

    enabled: bool = doc("Bisect new regressions automatically.", False)
    max_bisections: int = doc("At most this many bisections per run.", 1, bounds=(0, 100))
    repeat: int = doc(
        "Runs per bisection step (a floor; flaky steps repeat more).", 3, bounds=(1, 100)
    )


@dataclass(kw_only=True)
class Pipeline(Model):
    """What to run: pipelines/NAME.yaml."""

    description: str = doc("One line.", "")
    revisions: list[RevisionSet] = doc("Trees and revisions.", non_empty=True)
    experiments: list[VariantSet] = doc("Experiments and variants.", factory=list)
    profiles: list[str] = doc("Build profiles.", non_empty=True)
    hosts: list[str] = doc("Hosts the cells may run on.", non_empty=True)
    jobs: list[str] = doc("Jobs.", non_empty=True)
    repeat: int = doc("Runs per cell (on top of the job's own repeat).", 1, bounds=(1, 1000))
    baseline: Literal["previous", "none"] = doc(
        "Compare against the previous completed run of this pipeline, or nothing.", "previous"
    )
    auto_bisect: AutoBisect = doc("Auto-bisect policy.", factory=AutoBisect)
