"""Patch series in a saved mail thread (an mbox, as b4 or a mail client writes one).

Every version of a series posted to the thread is found: its cover letter (0/N) if any and its
patches 1..N in order. Replies (`Re:`), however much of a patch they quote, are review, not
patches. Bodies are decoded (quoted-printable, base64, charsets) and CRLF line ends undone, so a
patch file reads as `git format-patch` wrote it.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import mailbox
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from pathlib import Path

from kbisect.errors import UserError

_REPLY = re.compile(r"^\s*((re|aw|fwd?|sv)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_TAGS = re.compile(r"^\s*((\[[^\]]*\]\s*)+)")
_VERSION = re.compile(r"^(?:patch)?[-_]?v(\d+)$", re.IGNORECASE)
_COUNTER = re.compile(r"^(\d+)/(\d+)$")
_RESEND = re.compile(r"^\(?re-?send\)?$", re.IGNORECASE)
# A diff as git or diff -u writes it, at the start of a line: quoted ("> diff") does not count.
_DIFF = re.compile(r"^(diff --git |--- \S.*\n\+\+\+ \S.*\n@@ )", re.MULTILINE)
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_SIGNATURE = re.compile(r"^-- $", re.MULTILINE)
_PATCH_TYPES = ("plain", "x-patch", "x-diff")


@dataclass(frozen=True)
class Tags:
    """What a subject's [...] prefix says: `[RFC PATCH v3 (re-send) 2/4] title`."""

    patch: bool
    version: int
    number: int
    total: int
    resend: bool
    title: str


@dataclass(frozen=True)
class Mail:
    """One message of the thread, decoded."""

    message_id: str
    subject: str
    author: str
    date: str  # ISO 8601 when the Date header is readable, else as written
    parents: tuple[str, ...]  # In-Reply-To, then References nearest first
    body: str
    tags: Tags

    @property
    def has_diff(self) -> bool:
        return _DIFF.search(self.body) is not None

    def as_patch_file(self) -> str:
        """The patch as a mail `git am` and `git apply` both read."""
        headers = [
            f"From: {self.author}",
            f"Date: {self.date}",
            f"Subject: {self.subject}",
            f"Message-Id: {self.message_id}",
        ]
        return "\n".join(headers) + "\n\n" + self.body.rstrip("\n") + "\n"


@dataclass
class Series:
    """One posting of one version of a series."""

    version: int
    total: int
    resend: bool
    cover: Mail | None = None
    patches: dict[int, Mail] = field(default_factory=dict)

    @property
    def missing(self) -> list[int]:
        return [n for n in range(1, self.total + 1) if n not in self.patches]

    @property
    def lead(self) -> Mail:
        """The message that stands for the series: its cover letter, else its first patch."""
        return self.cover or self.patches[min(self.patches)]

    @property
    def ordered(self) -> list[Mail]:
        return [self.patches[n] for n in sorted(self.patches)]

    def diffs(self) -> tuple[str, ...]:
        """What a re-send repeats: the patches' contents, without mail or signature."""
        out = []
        for mail in self.ordered:
            found = _DIFF.search(mail.body)
            start = found.start() if found else 0
            sig = _SIGNATURE.search(mail.body, start)
            out.append(mail.body[start : sig.start() if sig else None])
        return tuple(out)

    def label(self) -> str:
        return f"v{self.version}" + (" (re-send)" if self.resend else "")


@dataclass
class Thread:
    """The series found in one mbox, oldest version first, and what was not a patch."""

    series: list[Series]
    messages: int
    replies: int


def parse_tags(subject: str) -> Tags:
    """The bracketed prefix of a subject; a reply (`Re: [PATCH ...]`) is never a patch."""
    if _REPLY.match(subject):
        return Tags(False, 0, 0, 0, False, _REPLY.sub("", subject))
    match = _TAGS.match(subject)
    if match is None:
        return Tags(False, 0, 0, 0, False, subject.strip())
    words = re.sub(r"[\[\]]", " ", match.group(1)).split()
    version, number, total, patch, resend = 1, 1, 1, False, False
    for word in words:
        patch = patch or "patch" in word.lower()
        if found := _VERSION.match(word):
            version = int(found.group(1))
        elif found := _COUNTER.match(word):
            number, total = int(found.group(1)), int(found.group(2))
        elif _RESEND.match(word):
            resend = True
    return Tags(patch, version, number, total, resend, subject[match.end() :].strip())


def read_mbox(path: Path) -> Thread:
    """The thread's series; bad input (not an mbox) is a UserError naming the file and line."""
    _check_is_mbox(path)
    box = mailbox.mbox(path, create=False)
    try:
        mails = [_mail(box.get_bytes(key), path) for key in box.iterkeys()]
    finally:
        box.close()
    series = _group(mails)
    replies = sum(1 for m in mails if _REPLY.match(m.subject))
    return Thread(series, len(mails), replies)


def _check_is_mbox(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    lines = head.splitlines()
    number, first = next(((i, ln) for i, ln in enumerate(lines, 1) if ln.strip()), (1, b""))
    if not first.startswith(b"From "):
        shown = first[:40].decode("utf-8", "replace") if first else "an empty file"
        raise UserError(
            f"{path}:{number}: expected an mbox (a 'From ' line before each message), got {shown!r}"
        )


def _mail(data: bytes, path: Path) -> Mail:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    subject = " ".join(_header(msg, "Subject").split())
    message_id = (_MESSAGE_ID.findall(_header(msg, "Message-ID")) or [""])[0]
    parents = _MESSAGE_ID.findall(_header(msg, "In-Reply-To"))
    parents += reversed(_MESSAGE_ID.findall(_header(msg, "References")))
    return Mail(
        message_id=message_id,
        subject=subject,
        author=" ".join(_header(msg, "From").split()),
        date=_date(_header(msg, "Date")),
        parents=tuple(dict.fromkeys(parents)),
        body=_body(msg),
        tags=parse_tags(subject),
    )


def _header(msg: Message, name: str) -> str:
    try:
        return str(msg.get(name, "") or "")
    except (ValueError, LookupError, TypeError):  # an unreadable encoded word: keep it raw
        raw = msg.get_all(name) if hasattr(msg, "get_all") else None
        return str(raw[0]) if raw else ""


def _date(text: str) -> str:
    try:
        return email.utils.parsedate_to_datetime(text).isoformat()
    except (TypeError, ValueError, IndexError):
        return " ".join(text.split())


def _body(msg: EmailMessage) -> str:
    """The message's text with its patch: inline, or an attachment after the commit message."""
    texts = [
        _text(part)
        for part in msg.walk()
        if not part.is_multipart()
        and part.get_content_maintype() == "text"
        and part.get_content_subtype() in _PATCH_TYPES
    ]
    if not texts:
        return ""
    with_diff = next((t for t in texts if _DIFF.search(t)), None)
    if with_diff is None or with_diff is texts[0]:
        return texts[0]
    if with_diff.startswith("From ") or with_diff.startswith("From:"):
        with_diff = with_diff.split("\n\n", 1)[-1]  # an attached format-patch mail: its body
    return texts[0].rstrip("\n") + "\n\n" + with_diff


def _text(part: Message) -> str:
    try:
        text = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError):  # an unknown charset: bytes as UTF-8
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(text, str):
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else ""
    if text.count("\r\n") and text.count("\r\n") == text.count("\n"):
        text = text.replace("\r\n", "\n")  # saved with CRLF line ends; a lone CR is content
    return text


def _group(mails: list[Mail]) -> list[Series]:
    """Patches and cover letters to series: by thread (the nearest cover letter or first patch
    of the same version they answer), else by version, size and author."""
    posted = [m for m in mails if m.tags.patch and (m.tags.number == 0 or m.has_diff)]
    by_id = {m.message_id: m for m in posted if m.message_id}
    found: dict[str, Series] = {}
    for mail in sorted(posted, key=lambda m: m.tags.number):  # covers and 1/N first
        key = _anchor(mail, by_id, set())
        tags = mail.tags
        series = found.setdefault(key, Series(tags.version, tags.total, tags.resend))
        if tags.number == 0:
            series.cover = series.cover or mail
        elif tags.number <= tags.total:
            series.patches.setdefault(tags.number, mail)
    _merge_unthreaded(found)
    result = [s for s in found.values() if s.patches]
    return sorted(result, key=lambda s: (s.version, s.lead.date))


def _merge_unthreaded(found: dict[str, Series]) -> None:
    """Patches that lost their thread join the one threaded posting they can belong to."""
    for key in [k for k in found if not k.startswith("<")]:
        lost = found[key]
        homes = [
            s
            for k, s in found.items()
            if k.startswith("<")
            and (s.version, s.total, s.resend) == (lost.version, lost.total, lost.resend)
            and (s.cover or next(iter(s.patches.values()))).author == key.split("/", 3)[3]
        ]
        if len(homes) == 1:
            for number, mail in lost.patches.items():
                homes[0].patches.setdefault(number, mail)
            del found[key]


def _anchor(mail: Mail, by_id: dict[str, Mail], seen: set[str]) -> str:
    tags = mail.tags
    if tags.number == 0 and mail.message_id:
        return mail.message_id
    seen.add(mail.message_id)
    for parent_id in mail.parents:
        parent = by_id.get(parent_id)
        if parent is None or parent_id in seen:
            continue
        same = (parent.tags.version, parent.tags.total) == (tags.version, tags.total)
        if same and parent.tags.number in (0, 1):
            return _anchor(parent, by_id, seen)
    if tags.number == 1 and mail.message_id:
        return mail.message_id
    # Threading lost (a mail client that drops References): version, size and author.
    return f"{tags.version}/{tags.total}/{tags.resend}/{mail.author}"
