"""What a booted host says about itself, in one round trip: its boot id, the running release and
command line (did it boot what was deployed?), and the facts of its fingerprint (Xen, NUMA, CPUs,
memory) recorded with every result."""

from __future__ import annotations

from dataclasses import dataclass

# What a boot loader entry written by kbisect prints before it loads the build: the console's
# evidence that the build was chosen (so a build that then does not come up is the kernel's
# failure, not the boot loader's).
LOADING_MARK = "kbisect: loading build"
BUILD_PARAM = "kbisect.build"  # on the dom0 command line: kbisect.build=KEY names the build

# One round trip that answers both "did it boot what we deployed?" and the host fingerprint.
# Plain POSIX sh + busybox applets: the embedded dom0 has nothing else. Files are read with the
# `read` builtin, not $(cat ...): a fork in a PV dom0 under TCG costs tens of milliseconds.
PROBE = r"""
say() { printf '%s=%s\n' "$1" "$2"; }
first() { v=; [ -r "$1" ] && read -r v < "$1"; }
first /proc/sys/kernel/random/boot_id; say boot_id "$v"
say release "$(uname -r)"
first /sys/hypervisor/type; say hypervisor "$v"
h=/sys/hypervisor/version
if [ -r $h/major ]; then
    first $h/major; x=$v; first $h/minor; x=$x.$v; first $h/extra; say xen_version "$x$v"
fi
if command -v xl >/dev/null; then
    say xen_cmdline "$(xl info 2>/dev/null | sed -n 's/^xen_commandline *: //p')"
fi
first /proc/cmdline; say dom0_cmdline "$v"
set -- /sys/devices/system/node/node[0-9]*; [ -e "$1" ] || set --; say numa_nodes $#
first /proc/sys/kernel/numa_balancing; say numa_balancing "$v"
model= cpus=0
while IFS=: read -r key value; do
    case $key in
    "model name"*) [ -n "$model" ] || model=${value# } ;;
    processor*) cpus=$((cpus + 1)) ;;
    esac
done < /proc/cpuinfo
say cpu_model "$model"; say cpus $cpus
while read -r key value unit; do
    [ "$key" = MemTotal: ] && say memory_kb "$value"
done < /proc/meminfo
exit 0
"""

FINGERPRINT_KEYS = (
    "boot",
    "hypervisor",
    "xen_version",
    "xen_cmdline",
    "dom0_release",
    "dom0_cmdline",
    "numa_nodes",
    "numa_balancing",
    "cpu_model",
    "cpus",
    "memory_kb",
)


@dataclass(frozen=True)
class Probe:
    """What a booted host says about itself."""

    facts: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Probe:
        facts = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                facts[key.strip()] = value.strip()
        return cls(facts)

    def get(self, key: str) -> str:
        return self.facts.get(key, "")

    @property
    def build(self) -> str | None:
        """The build key on the dom0 command line (kbisect.build=KEY), if any."""
        for word in self.get("dom0_cmdline").split():
            name, _, value = word.partition("=")
            if name == BUILD_PARAM:
                return value
        return None

    def fingerprint(self, extra: dict[str, str]) -> dict[str, str]:
        """The fingerprint facts; `extra` fills in what the host did not say."""
        got = dict(self.facts)
        got["dom0_release"] = got.pop("release", "")
        got.update({k: v for k, v in extra.items() if v and not got.get(k)})
        return {k: got.get(k, "") for k in FINGERPRINT_KEYS}
