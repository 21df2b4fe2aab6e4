"""A made-up history on top of a real release, for demonstrating `kbisect bisect` on the seed case.

The imported Debian releases are one commit each, thousands of changes apart: nothing to bisect.
This writes a branch of small commits on a release: cleanups of one C comment or one
reStructuredText paragraph each (typos, repeated words, punctuation, whitespace) that change nothing
the compiler sees and never add or remove a line, so even __LINE__ and ccache's preprocessed output
stay the same; and, at a point chosen from a seed, the regression of the seed case
(docs/findings/gntdev-numa.md): gntdev_mmap() marking grant maps VM_IO instead of VM_MIXEDMAP
(as seeds/gntdev-numa/vm-io.patch does). Authors, dates and every choice derive from the base
commit and the seed, so the same inputs give the same commit ids.

The kernel is never checked out: the few files involved are read from the bare repository and the
commits are written by one `git fast-import`, which also moves the branch.
"""

from __future__ import annotations

import random
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kbisect.errors import UserError
from kbisect.tree.git import Git
from kbisect.tree.repos import TreeRepo, resolve

DEFAULT_BRANCH = "demo/gntdev-vm-io"
GNTDEV = "drivers/xen/gntdev.c"
SPELLING = "scripts/spelling.txt"  # checkpatch's misspelling||correction list
MAX_COMMITS = 500
COMMITTER = ("kbisect demo", "demo@kbisect.invalid")
AUTHORS = (
    ("Ada Lindqvist", "ada.lindqvist@example.org"),
    ("Bram Okafor", "bram.okafor@example.org"),
    ("Chiara Vance", "chiara.vance@example.org"),
    ("Dmitri Halloran", "dmitri.halloran@example.org"),
    ("Esme Takahashi", "esme.takahashi@example.org"),
    ("Felix Moreau", "felix.moreau@example.org"),
)
SPACING_SECONDS = 5400  # each commit 1.5 h after the previous one, starting from the base

# Where the cleanups go: (directory prefix, file suffixes); commits take the areas in turn.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("drivers/xen/", (".c", ".h")),
    ("Documentation/", (".rst",)),
    ("mm/", (".c",)),
    ("arch/x86/xen/", (".c", ".h")),
    ("include/xen/", (".h",)),
)
_DOC_TOPICS = re.compile(r"(^|/)(mm|virt)/|xen")  # the Documentation/ files on the seed's topics

_VM_MIXEDMAP = re.compile(
    r"^(?P<lead>[ \t]*(?:vma->vm_flags \|=|vm_flags_set\(vma,) VM_DONTEXPAND \| VM_DONTDUMP \| )"
    r"VM_MIXEDMAP(?P<tail>\)?;)[ \t]*$",
    re.MULTILINE,
)
CULPRIT_SUBJECT = "xen/gntdev: mark grant mappings VM_IO to keep NUMA balancing away"
CULPRIT_BODY = """\
On a PV dom0 gntdev writes the grant PTEs itself (use_ptemod), and the
NUMA balancing scanner must never turn them into PROT_NONE hinting
faults. VM_MIXEDMAP keeps task_numa_work() away from these VMAs today,
but only as a side effect of how mixed maps are treated.

Say what we mean instead: to the mm, a grant mapping is foreign memory
it must not migrate, so mark the VMA VM_IO, which vma_migratable()
rejects explicitly.
"""


@dataclass(frozen=True)
class DemoCommit:
    id: str
    subject: str
    path: str  # the one file the commit changes


@dataclass(frozen=True)
class DemoHistory:
    branch: str
    base: str  # full commit ids
    tip: str
    commits: tuple[DemoCommit, ...]  # oldest first; commits[0]'s parent is base
    culprit: DemoCommit  # the commit that swaps VM_MIXEDMAP for VM_IO

    @property
    def culprit_index(self) -> int:
        return self.commits.index(self.culprit)


def make_demo_history(
    tree: TreeRepo,
    base_rev: str,
    branch: str = DEFAULT_BRANCH,
    commits: int = 32,
    culprit_index: int | None = None,
    seed: int = 2016,
) -> DemoHistory:
    """Write (or rewrite) `branch` as `commits` commits on base_rev, one of which is the culprit.

    By default the culprit sits about two thirds of the way up, at a place the seed picks.
    """
    if not 1 <= commits <= MAX_COMMITS:
        raise UserError(f"--commits must be between 1 and {MAX_COMMITS}, not {commits}")
    if culprit_index is not None and not 0 <= culprit_index < commits:
        raise UserError(f"culprit index {culprit_index} is outside 0..{commits - 1}")
    base = resolve(tree, base_rev)
    rng = random.Random(seed)  # noqa: S311 - reproducible choices, not secrets
    default = _culprit_index(commits, rng)  # drawn either way, so later choices stay the same
    where = default if culprit_index is None else culprit_index
    with Git(tree.path) as g:
        ref = _check_branch(g, tree, branch)
        files = _files(g, base)
        if GNTDEV not in files:
            raise UserError(f"{base_rev} ({base[:12]}) in tree {tree.name!r} has no {GNTDEV}")
        mode, blob = files[GNTDEV]
        flagged = _with_vm_io(_text(g, blob) or "", base_rev)
        culprit = _Change(GNTDEV, mode, flagged, CULPRIT_SUBJECT, CULPRIT_BODY)
        cleanups = _cleanups(g, files, rng, commits - 1)
        if len(cleanups) < commits - 1:
            raise UserError(
                f"{base_rev} in tree {tree.name!r} offers only {len(cleanups)} harmless edits "
                f"for the demo: ask for at most {len(cleanups) + 1} commits"
            )
        changes = [*cleanups[:where], culprit, *cleanups[where:]]
        start = int(g.run("show", "-s", "--format=%ct", base).strip())
        ids = _write(g, ref, base, changes, start, rng)
    made = tuple(DemoCommit(i, c.subject, c.path) for i, c in zip(ids, changes, strict=True))
    return DemoHistory(branch, base, ids[-1], made, made[where])


def _culprit_index(commits: int, rng: random.Random) -> int:
    """About two thirds of the way, give or take a tenth of the history."""
    centre = (2 * commits) // 3
    spread = max(1, commits // 10)
    return min(commits - 1, max(0, rng.randint(centre - spread, centre + spread)))


def _check_branch(g: Git, tree: TreeRepo, branch: str) -> str:
    """The branch's full ref; refuses bad names and branches that are not demo histories."""
    ref = f"refs/heads/{branch}"
    if branch.startswith("-") or not g.try_run("check-ref-format", ref).ok:
        raise UserError(f"{branch!r} is not a valid branch name")
    found = g.try_run("log", "-1", "--format=%ce", ref, "--")
    if found.ok and found.stdout.strip() != COMMITTER[1]:
        raise UserError(
            f"branch {branch!r} already exists in tree {tree.name!r} and is not a demo history: "
            "choose another --branch"
        )
    return ref


def _with_vm_io(text: str, base_rev: str) -> str:
    """gntdev.c with gntdev_mmap()'s VM_MIXEDMAP replaced by VM_IO, as vm-io.patch does."""
    found = list(_VM_MIXEDMAP.finditer(text))
    if len(found) != 1:
        raise UserError(
            f"{GNTDEV} at {base_rev} has no (single) line "
            "`vma->vm_flags |= VM_DONTEXPAND | VM_DONTDUMP | VM_MIXEDMAP;` in gntdev_mmap(), "
            "so the demo's regression (VM_MIXEDMAP -> VM_IO) cannot be made there: "
            "use a 4.10 or later base such as a 6.1 release"
        )
    return _VM_MIXEDMAP.sub(r"\g<lead>VM_IO\g<tail>", text)


# --- reading the base --------------------------------------------------------------------------


def _files(g: Git, base: str) -> dict[str, tuple[str, str]]:
    """{path: (mode, blob id)} of the regular files the demo may read at base."""
    prefixes = sorted({prefix.rstrip("/") for prefix, _ in AREAS} | {GNTDEV, SPELLING})
    out = g.run("ls-tree", "-r", "-z", "--full-tree", base, "--", *prefixes)
    files: dict[str, tuple[str, str]] = {}
    for entry in out.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        mode, kind, blob = meta.split()
        if kind == "blob" and mode in ("100644", "100755") and '"' not in path:
            files[path] = (mode, blob)
    return files


def _text(g: Git, blob: str) -> str | None:
    """A file as text; None when it is not UTF-8 or has CRLF line ends (left alone)."""
    try:
        text = g.read_blob(blob).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\r" in text else text


def _spelling(g: Git, files: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Misspelling -> correction: a few common ones plus the tree's own checkpatch list."""
    words = dict(_COMMON_TYPOS)
    listed = files.get(SPELLING)
    text = _text(g, listed[1]) if listed else None
    for line in (text or "").splitlines():
        wrong, sep, right = line.partition("||")
        if sep and wrong.isalpha() and wrong.islower() and " " not in right:
            words[wrong] = right.strip()
    return words


_COMMON_TYPOS = {
    "accross": "across",
    "adress": "address",
    "alocate": "allocate",
    "begining": "beginning",
    "calback": "callback",
    "existant": "existent",
    "independant": "independent",
    "neccessary": "necessary",
    "occured": "occurred",
    "occurence": "occurrence",
    "paramter": "parameter",
    "recieve": "receive",
    "refered": "referred",
    "seperate": "separate",
    "succesful": "successful",
    "untill": "until",
    "wich": "which",
}


# --- cleanups ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """A cleanup: where `pattern` matches and `fix` returns text, that text replaces the match."""

    name: str
    rank: int  # cleanups a reviewer would care about most come first
    pattern: re.Pattern[str]
    fix: Callable[[re.Match[str]], str | None]
    in_docs: bool
    subject: str  # "{area}: ...", for C files
    doc_subject: str
    body: str  # with {bad}, {good} and {where}


def _rules(spelling: dict[str, str]) -> list[_Rule]:
    def correct(m: re.Match[str]) -> str | None:
        word = m.group(0)
        right = spelling.get(word.lower())
        if right is None or _token(m).strip(",.;:!?()\"'") != word:
            return None  # not a misspelling, or part of a path, URL, identifier or `literal`
        return right.capitalize() if word[0].isupper() else right

    return [
        _Rule(
            "typo",
            0,
            re.compile(r"\b[A-Za-z]{3,}\b"),
            correct,
            True,
            "{area}: fix a comment typo",
            "{area}: fix a typo",
            'Correct the spelling of "{good}" (written "{bad}") in {where}.',
        ),
        _Rule(
            "repeated",
            0,
            re.compile(r"\b(the|a|an|to|of|is|in|and|be|it|for|on|with|as|by|are|we|if) \1\b"),
            lambda m: m.group(1),
            True,
            "{area}: remove a repeated word in a comment",
            "{area}: remove a repeated word",
            'Drop the repeated "{good}" ("{bad}") in {where}.',
        ),
        _Rule(
            "cannot",
            1,
            re.compile(r"\b([Cc])an not\b(?! only)"),
            lambda m: m.group(1) + "annot",
            True,
            "{area}: spell 'cannot' as one word in a comment",
            "{area}: spell 'cannot' as one word",
            'Write "{good}" rather than "{bad}" in {where}.',
        ),
        _Rule(
            "abbreviation",
            1,
            re.compile(r"\b(e\.g|i\.e)(?![.\w])"),
            lambda m: m.group(0) + ".",
            True,
            "{area}: punctuate '{good}' in a comment",
            "{area}: punctuate '{good}'",
            'Spell "{good}" with its final full stop in {where}.',
        ),
        _Rule(
            "whitespace",
            2,
            re.compile(r"[ \t]+$", re.MULTILINE),
            lambda m: "",
            True,
            "{area}: remove trailing whitespace in a comment",
            "{area}: remove trailing whitespace",
            "Remove trailing whitespace from {where}; checkpatch.pl warns about it.",
        ),
        _Rule(
            "spacing",
            3,
            re.compile(r"(?<=[a-z0-9)]\.)  (?=[A-Z])"),
            lambda m: " ",
            False,  # two spaces may align reStructuredText tables
            "{area}: use one space between sentences in a comment",
            "",
            "Separate the sentences of {where} with one space, not two.",
        ),
    ]


def _token(m: re.Match[str]) -> str:
    """The whitespace-delimited text around a match."""
    text, start, end = m.string, m.start(), m.end()
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end]


@dataclass(frozen=True)
class _Edit:
    """Replace `bad` by `good` wherever the rule finds it in one comment or paragraph."""

    rule: _Rule
    path: str
    span: int  # index into _editable(path, text): edits never add or remove spans
    bad: str
    good: str


@dataclass(frozen=True)
class _Change:
    path: str
    mode: str
    text: str  # the file's new content
    subject: str
    body: str


# Tokens of C that matter for finding comments: comments, strings and character constants
# (so a "/*" inside a string is not a comment). Strings never run past the end of a line.
_C_TOKENS = re.compile(r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.DOTALL)
_RST_STRUCTURE = re.compile(
    r"^\s*(?:[|+]|\.\.|:\w)"  # tables, directives and comments, field lists
    r"|^\s*[-=~^*#+`'\"_:.]{3,}[-=~^*#+`'\"_:. \t]*$"  # title adornments, table borders
)


def _is_code(path: str) -> bool:
    return path.endswith((".c", ".h"))


def _editable(path: str, text: str) -> list[tuple[int, int]]:
    """(start, end) spans an edit may touch: C comments (but not license headers), or the
    plain paragraphs of a reStructuredText file (no tables, titles, directives or literals)."""
    if _is_code(path):
        return [
            m.span()
            for m in _C_TOKENS.finditer(text)
            if m.group(0).startswith("/")
            and "SPDX-License" not in m.group(0)
            and "Copyright" not in m.group(0)
        ]
    spans = []
    for block in re.finditer(r"(?:^[^\n]*\S[^\n]*(?:\n|\Z))+", text, re.MULTILINE):
        lines = block.group(0).splitlines()
        if lines[0][:1].isspace() or any(_RST_STRUCTURE.match(line) for line in lines):
            continue  # indented (literal, quote, directive body) or structured text
        spans.append(block.span())
    return spans


def _matches(rule: _Rule, text: str, start: int, end: int) -> Iterator[re.Match[str]]:
    for m in rule.pattern.finditer(text, start, end):
        if "\n" not in m.group(0) and rule.fix(m) is not None:
            yield m


def _edits_in(path: str, text: str, rules: list[_Rule]) -> list[_Edit]:
    """Every distinct cleanup the file offers, at most one per (rule, text, span)."""
    edits: dict[tuple[str, str, int], _Edit] = {}
    usable = [r for r in rules if _is_code(path) or r.in_docs]
    for index, (start, end) in enumerate(_editable(path, text)):
        for rule in usable:
            for m in _matches(rule, text, start, end):
                key = (rule.name, m.group(0), index)
                edits.setdefault(key, _Edit(rule, path, index, m.group(0), rule.fix(m) or ""))
    return list(edits.values())


def _apply(edit: _Edit, text: str) -> str:
    """The text with edit.bad replaced in the edit's span; the line count never changes."""
    start, end = _editable(edit.path, text)[edit.span]
    out, last = [], 0
    for m in _matches(edit.rule, text, start, end):
        if m.group(0) == edit.bad:
            out += [text[last : m.start()], edit.good]
            last = m.end()
    out.append(text[last:])
    return "".join(out)


def _in_area(path: str, prefix: str, suffixes: tuple[str, ...]) -> bool:
    if not path.startswith(prefix) or not path.endswith(suffixes):
        return False
    if path.startswith("drivers/xen/gntdev"):
        return False  # only the culprit touches gntdev
    return prefix != "Documentation/" or bool(_DOC_TOPICS.search(path[len(prefix) :]))


def _cleanups(
    g: Git, files: dict[str, tuple[str, str]], rng: random.Random, wanted: int
) -> list[_Change]:
    """Up to `wanted` one-comment (or one-paragraph) cleanups in a seeded order.

    A different file each while there are enough, the areas in turn, each file's best kind of
    cleanup first; then more cleanups of the files already touched.
    """
    rules = _rules(_spelling(g, files))
    texts: dict[str, str] = {}
    queues: list[deque[_Edit]] = []
    spare: list[_Edit] = []
    for prefix, suffixes in AREAS:
        names = [path for path in sorted(files) if _in_area(path, prefix, suffixes)]
        rng.shuffle(names)
        best: list[_Edit] = []
        for path in names:
            text = _text(g, files[path][1])
            edits = _edits_in(path, text, rules) if text is not None else []
            if not edits or text is None:
                continue
            texts[path] = text
            rng.shuffle(edits)
            edits.sort(key=lambda e: e.rule.rank)
            best.append(edits[0])
            spare += edits[1:]
        best.sort(key=lambda e: e.rule.rank)
        queues.append(deque(best))
    order: list[_Edit] = []
    while any(queues):
        order += [queue.popleft() for queue in queues if queue]
    rng.shuffle(spare)
    spare.sort(key=lambda e: e.rule.rank)
    chosen = (order + spare)[:wanted]
    rng.shuffle(chosen)
    changes = []
    for edit in chosen:
        text = _apply(edit, texts[edit.path])
        if text != texts[edit.path]:  # always, as rules and spans never overlap another's fix
            texts[edit.path] = text
            changes.append(_describe(edit, files[edit.path][0], text))
    return changes


def _describe(edit: _Edit, mode: str, text: str) -> _Change:
    name = edit.path.rsplit("/", 1)[-1]
    code = _is_code(edit.path)
    words = {
        "area": _area(edit.path),
        "bad": edit.bad,
        "good": edit.good,
        "where": f"a comment in {name}" if code else name,
    }
    subject = (edit.rule.subject if code else edit.rule.doc_subject).format(**words)
    body = edit.rule.body.format(**words) + ("\n\nNo functional change." if code else "")
    return _Change(edit.path, mode, text, subject, body + "\n")


def _area(path: str) -> str:
    """The subject prefix a kernel developer would use for a file, e.g. xen/privcmd, x86/xen."""
    parts = path.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    if parts[0] == "Documentation":
        return "docs: " + "/".join(parts[1:-1]) if len(parts) > 2 else "docs"
    if parts[:2] == ["drivers", "xen"]:
        return "xen/" + (parts[2] if len(parts) > 3 else stem.removeprefix("xen-"))
    if parts[:3] == ["arch", "x86", "xen"]:
        return "x86/xen"
    if parts[:2] == ["include", "xen"]:
        return "xen/" + (parts[2] if len(parts) > 3 else stem).replace("_", "-")
    if parts[0] == "mm":
        return "mm/" + (parts[1] if len(parts) > 2 else stem)
    return "/".join(parts[:-1]) or stem


# --- writing -----------------------------------------------------------------------------------


def _write(
    g: Git, ref: str, base: str, changes: list[_Change], start: int, rng: random.Random
) -> list[str]:
    """Commit the changes one on another on base with `git fast-import`, which moves `ref` to
    the last one (forced: rerunning replaces the branch); returns the commit ids in order."""
    stream = bytearray(b"feature done\n")
    for number, change in enumerate(changes, 1):
        name, email = AUTHORS[rng.randrange(len(AUTHORS))]
        message = f"{change.subject}\n\n{change.body}\nSigned-off-by: {name} <{email}>\n".encode()
        content = change.text.encode()
        when = start + number * SPACING_SECONDS
        stream += f"commit {ref}\nmark :{number}\n".encode()
        stream += f"author {name} <{email}> {when} +0000\n".encode()
        stream += f"committer {COMMITTER[0]} <{COMMITTER[1]}> {when} +0000\n".encode()
        stream += b"data %d\n%s" % (len(message), message)
        if number == 1:
            stream += f"from {base}\n".encode()
        stream += f"M {change.mode} inline {change.path}\n".encode()
        stream += b"data %d\n%s\n\n" % (len(content), content)
    stream += b"done\n"
    with tempfile.TemporaryDirectory(prefix="kbisect-demo-") as scratch:
        marks = Path(scratch) / "marks"
        g.run("fast-import", "--quiet", "--force", f"--export-marks={marks}", stdin=bytes(stream))
        ids = dict(line.split() for line in marks.read_text().splitlines())
    return [ids[f":{number}"] for number in range(1, len(changes) + 1)]
