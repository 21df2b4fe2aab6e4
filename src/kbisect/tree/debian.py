"""Debian's linux-source point releases as a real git history, one commit per release.

Each release's .deb is fetched with `apt-get download` (kept in the cache), its source tarball is
streamed straight into `git fast-import` (no 1.3 GB extraction), and the commit gets the release's
date and a fixed author, so importing the same release twice gives the same commit id. Releases are
appended in Debian version order; refs move only when a release is complete (`done`), so an
interrupted import leaves the repository as it was after the last finished release.
"""

from __future__ import annotations

import functools
import lzma
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kbisect import processes
from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.processes import PIPE
from kbisect.progress import advance, byte_progress
from kbisect.tree.git import Git

AUTHOR = "kbisect import <kbisect@localhost>"
BRANCH = "refs/heads/main"
APT_TIMEOUT = 900.0
IMPORT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Release:
    package: str
    version: str

    @property
    def tag(self) -> str:
        """Tag of this release, e.g. v6.1.192-2 (an epoch, if any, is dropped)."""
        return "v" + self.version.split(":", 1)[-1]

    @property
    def upstream_tag(self) -> str:
        """Tag of the upstream version, e.g. v6.1.192: the newest Debian revision of it."""
        return upstream_tag(self.tag)

    @property
    def deb_name(self) -> str:
        return f"{self.package}_{self.version.replace(':', '%3a')}_all.deb"


def compare_versions(a: str, b: str) -> int:
    """Debian version order, as dpkg defines it."""
    if a == b:
        return 0
    argv = ["dpkg", "--compare-versions", a, "lt", b]
    less = processes.run(argv, deadline=30, check=False).returncode
    return -1 if less == 0 else 1


def available_releases(package: str) -> list[Release]:
    """The versions the package archive offers now, oldest first (`apt-cache madison`)."""
    out = processes.run(["apt-cache", "madison", package], deadline=120).stdout
    versions = {line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2}
    if not versions:
        raise InfraError(f"apt knows no versions of {package}: run `apt-get update` first")
    ordered = sorted(versions, key=functools.cmp_to_key(compare_versions))
    return [Release(package, v) for v in ordered]


def download(release: Release, debs_dir: Path) -> Path:
    """The release's .deb in the cache, downloaded once; a partial download is never kept."""
    target = debs_dir / release.deb_name
    if target.is_file():
        return target
    partial = debs_dir / f".partial-{release.version.replace(':', '_')}"
    partial.mkdir(parents=True, exist_ok=True)
    for stale in partial.iterdir():
        stale.unlink()
    spec = f"{release.package}={release.version}"
    processes.run(["apt-get", "download", "-q", spec], deadline=APT_TIMEOUT, cwd=partial)
    [fetched] = list(partial.glob("*.deb"))
    fetched.rename(target)
    partial.rmdir()
    return target


class _Counting:
    """A read-only stream wrapper that reports how many bytes were read."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None]) -> None:
        self.raw, self.on_read = raw, on_read

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.on_read(len(data))
        return data


def _source_members(
    deb: Path, package: str, on_read: Callable[[int], None]
) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile, int]]:
    """(member, archive, release date) for every entry of the source tarball inside the .deb.

    dpkg-deb streams the package's data archive; leaving early ends it."""
    with processes.start(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=PIPE) as dpkg:
        assert dpkg.stdout is not None
        try:
            with tarfile.open(fileobj=dpkg.stdout, mode="r|") as outer:
                for entry in outer:
                    if entry.name.lstrip("./") != f"usr/src/{package}.tar.xz":
                        continue
                    inner_raw = outer.extractfile(entry)
                    assert inner_raw is not None
                    counted = _Counting(inner_raw, on_read)
                    with tarfile.open(fileobj=counted, mode="r|xz") as inner:  # type: ignore[call-overload]
                        for member in inner:
                            yield member, inner, int(entry.mtime)
                    return
        except (tarfile.TarError, lzma.LZMAError, EOFError) as exc:
            # dpkg-deb's own complaint when it failed; else the archive inside is damaged
            raise dpkg.failure(within=2) or InfraError(
                f"{deb.name}: the source tarball inside cannot be read ({exc})"
            ) from exc
    raise InfraError(f"{deb.name}: no usr/src/{package}.tar.xz inside")


def import_release(repo: Path, release: Release, deb: Path) -> tuple[str, int]:
    """Append one release as a commit on main, tagged; returns (commit id, file count)."""
    with Git(repo) as g:
        tip = g.try_run("rev-parse", "--verify", "-q", BRANCH).stdout.strip()
    deadline = Deadline(IMPORT_TIMEOUT)
    argv = ["git", "fast-import", "--quiet", "--date-format=raw"]
    what = f"importing {release.tag}"
    # Leaving this block early (an error, Ctrl-C) ends git fast-import before it reads `done`:
    # then it discards the partial release.
    with processes.start(argv, cwd=repo, stdin=PIPE, hint="apt-get install git", what=what) as fi:
        assert fi.stdin is not None
        try:
            count = _write_release(fi.stdin, release, deb, tip, deadline)
            fi.stdin.close()
        except BrokenPipeError as exc:  # it stopped reading: what it said is why
            raise fi.failure(within=30) or InfraError(f"{what}: git fast-import quit") from exc
        fi.check(deadline)
    with Git(repo) as g:
        return g.run("rev-parse", f"{release.tag}^{{commit}}").strip(), count


def _write_release(
    out: IO[bytes], release: Release, deb: Path, tip: str, deadline: Deadline
) -> int:
    """The git fast-import stream of one release (blobs, the commit, its tag, `done`); returns
    the number of files."""
    files: list[bytes] = []
    marks: dict[str, int] = {}
    date = 0
    out.write(b"feature done\n")
    with byte_progress(f"importing {release.tag}", _inner_size_hint(deb)) as bar:
        for member, archive, member_date in _source_members(
            deb, release.package, lambda n: advance(bar, n)
        ):
            date = member_date  # the release's date, the same for every member
            if deadline.expired:
                raise InfraError(f"importing {release.tag} took longer than {IMPORT_TIMEOUT:g} s")
            path = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not path:
                continue
            if member.isfile():
                data = archive.extractfile(member).read()  # type: ignore[union-attr]
                mode = b"100755" if member.mode & 0o111 else b"100644"
            elif member.issym():
                data, mode = member.linkname.encode(), b"120000"
            elif member.islnk():
                target = member.linkname.split("/", 1)[1]
                files.append(
                    b"M %s :%d %s\n" % (mode_of(files, target), marks[target], path.encode())
                )
                continue
            else:
                continue  # directories are implied by their files
            mark = len(marks) + 1
            marks[path] = mark
            out.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)))
            out.write(data)
            out.write(b"\n")
            files.append(b"M %s :%d %s\n" % (mode, mark, path.encode()))
    message = (
        f"{release.package} {release.version}\n\n"
        f"Debian's {release.package} {release.version}, imported by kbisect.\n"
    ).encode()
    out.write(b"commit %s\n" % BRANCH.encode())
    for role in (b"author", b"committer"):
        out.write(b"%s %s %d +0000\n" % (role, AUTHOR.encode(), date))
    out.write(b"data %d\n%s" % (len(message), message))
    if tip:
        out.write(b"from %s\n" % tip.encode())
    out.write(b"deleteall\n")
    out.writelines(files)
    out.write(b"\nreset refs/tags/%s\nfrom %s\n\n" % (release.tag.encode(), BRANCH.encode()))
    out.write(b"done\n")
    return len(files)


def mode_of(files: list[bytes], path: str) -> bytes:
    for line in files:
        if line.endswith(b" " + path.encode() + b"\n"):
            return line.split(b" ")[1]
    return b"100644"


def _inner_size_hint(deb: Path) -> int | None:
    """Roughly the bytes of the source tarball, for the progress bar (the .deb's own size)."""
    try:
        return deb.stat().st_size
    except OSError:
        return None


def upstream_tag(release_tag: str) -> str:
    return release_tag.rsplit("-", 1)[0] if "-" in release_tag else release_tag


def update_upstream_tags(repo: Path) -> None:
    """Point each upstream tag (v6.1.170) at the newest imported Debian revision of it."""
    with Git(repo) as g:
        for tag in imported_tags(repo):  # oldest first: the newest revision wins
            alias = upstream_tag(tag)
            if alias != tag:
                g.run("update-ref", f"refs/tags/{alias}", f"refs/tags/{tag}")


def imported_tags(repo: Path) -> list[str]:
    """Release tags on main (one per imported Debian version), oldest first."""
    with Git(repo) as g:
        if not g.try_run("rev-parse", "--verify", "-q", BRANCH).ok:
            return []
        log = g.run("log", "--first-parent", "--reverse", "--format=%H", BRANCH)
        tags = g.run("for-each-ref", "--format=%(objectname) %(refname:short)", "refs/tags")
    by_commit: dict[str, str] = {}
    for line in tags.splitlines():
        commit, tag = line.split(" ", 1)
        if upstream_tag(tag) != tag or commit not in by_commit:  # release tags over aliases
            by_commit[commit] = tag
    return [by_commit[c] for c in log.split() if c in by_commit]


def require_known(versions: list[str], releases: list[Release], package: str) -> list[Release]:
    known = {r.version: r for r in releases}
    unknown = [v for v in versions if v not in known]
    if unknown:
        raise UserError(
            f"{package} has no version {', '.join(unknown)} "
            f"(available: {', '.join(r.version for r in releases)})"
        )
    return [r for r in releases if r.version in versions]
