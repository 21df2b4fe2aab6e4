"""`kbisect variants.import`: variants from a mail thread saved as an mbox, written here.

The thread holds what real ones do: an RFC v1 with a cover letter, review replies quoting the
patches (and one proposing a diff of its own), a v2 with a patch missing, a v3 whose patches come
quoted-printable, base64 and as a base64 attachment, one of them with its threading lost, a
re-send of v3, and CRLF line ends. The patches are real `git format-patch` output of a small
git tree, and the imported variants are checked out on it.
"""

from __future__ import annotations

import base64
import os
import quopri
import subprocess
import sys
import textwrap
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.conftest import MakeProject
from tests.fake_kernel import make_kernel_repo, make_patch

from kbisect.config import load_project
from kbisect.tree import repos
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.mbox import parse_tags
from kbisect.tree.variants import find_variant

AUTHOR = "Juergen Gross <jgross@suse.com>"
REVIEWER = "Hugh Dickins <hughd@google.com>"
GNTDEV = "drivers/xen/gntdev.c"


def kb(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KBISECT_ROOT"}
    return subprocess.run(
        [sys.executable, "-m", "kbisect", *argv, "--root", str(root)],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def body_of(format_patch: str) -> str:
    """What follows the headers of a `git format-patch` mail: message, diffstat, diff."""
    return format_patch.split("\n\n", 1)[1]


def mail(
    subject: str,
    body: str,
    *,
    msgid: str,
    date: str,
    author: str = AUTHOR,
    reply_to: str | None = None,
    encoding: str = "8bit",
) -> bytes:
    """One message as a mail client sends it; `encoding` is its transfer encoding."""
    headers = [f"From: {author}", f"Subject: {subject}", f"Date: {date}", f"Message-Id: {msgid}"]
    if reply_to:
        headers += [f"In-Reply-To: {reply_to}", f"References: {reply_to}"]
    headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    headers.append(f"Content-Transfer-Encoding: {encoding}")
    data = body.encode()
    if encoding == "quoted-printable":
        data = quopri.encodestring(data)
    elif encoding == "base64":
        data = base64.encodebytes(data)
    return "\n".join(headers).encode() + b"\n\n" + data


def with_attachment(
    subject: str, message: str, diff: str, *, msgid: str, date: str, reply_to: str
) -> bytes:
    """The commit message inline, the diff as a base64 text/x-patch attachment."""
    msg = EmailMessage()
    msg["From"], msg["Subject"], msg["Date"], msg["Message-Id"] = AUTHOR, subject, date, msgid
    msg["In-Reply-To"] = reply_to
    msg.set_content(message)
    msg.add_attachment(diff.encode(), maintype="text", subtype="x-patch", filename="p.patch")
    return msg.as_bytes()


def mbox(*mails: bytes, crlf: bool = False) -> bytes:
    out = b"".join(
        b"From mboxrd@z Thu Jan  1 00:00:00 1970\n" + m.rstrip(b"\n") + b"\n\n" for m in mails
    )
    return out.replace(b"\n", b"\r\n") if crlf else out


# -- subjects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[PATCH v3 (re-send) 2/4] xen: x", (True, 3, 2, 4, True, "xen: x")),
        ("[RFC PATCH v2 0/3] xen: x", (True, 2, 0, 3, False, "xen: x")),
        ("[RFC][PATCH v2 1/3] xen: x", (True, 2, 1, 3, False, "xen: x")),
        ("[PATCHv4 1/2] xen: x", (True, 4, 1, 2, False, "xen: x")),
        ("[PATCH net-next v5 3/7] net: y", (True, 5, 3, 7, False, "net: y")),
        ("[PATCH RESEND] mm: z", (True, 1, 1, 1, True, "mm: z")),
        ("[PATCH] mm: z", (True, 1, 1, 1, False, "mm: z")),
        ("Re: [PATCH v3 2/4] xen: x", (False, 0, 0, 0, False, "[PATCH v3 2/4] xen: x")),
        ("RE: Re: [PATCH 1/2] xen: x", (False, 0, 0, 0, False, "[PATCH 1/2] xen: x")),
        ("[GIT PULL] xen: fixes", (False, 1, 1, 1, False, "xen: fixes")),
    ],
)
def test_subject_tags(subject: str, expected: tuple[object, ...]) -> None:
    tags = parse_tags(subject)
    assert (tags.patch, tags.version, tags.number, tags.total, tags.resend, tags.title) == expected


# -- the thread ------------------------------------------------------------------------------


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    return make_kernel_repo(tmp_path / "src")


@pytest.fixture
def patches(kernel: Path) -> dict[str, str]:
    """Bodies of real patches: v1's two written against tag v1, v3's two against tag v3 (where
    gntdev's flag line reads differently, so v1's first patch no longer applies there)."""
    on_v3 = "VM_MIXEDMAP | VM_DONTCOPY;"
    return {
        "v1-1": body_of(make_patch(kernel, GNTDEV, "VM_MIXEDMAP;", ";", "drop VM_MIXEDMAP")),
        "v1-2": body_of(
            make_patch(kernel, GNTDEV, "int err = 0;", "int err = 0; /* policy */", "policy")
        ),
        "v3-1": body_of(
            make_patch(kernel, GNTDEV, on_v3, "VM_DONTCOPY;", "drop VM_MIXEDMAP", base="v3")
        ),
        "v3-2": body_of(
            make_patch(kernel, GNTDEV, "int err = 0;", "int err = 0; /* mpol */", "mp", base="v3")
        ),
    }


V1_TITLE = "xen/gntdev: Use mempolicy instead of VM_IO flag"


def thread(p: dict[str, str]) -> bytes:
    d = "Tue, {} Nov 2016 10:0{}:00 +0100"
    quoted = "".join(f"> {line}\n" for line in p["v1-1"].splitlines())
    v3_message, v3_diff = p["v3-1"].split("---\n", 1)
    return mbox(
        mail(f"[RFC PATCH 0/2] {V1_TITLE}", "Two patches.\n", msgid="<c1@t>", date=d.format(1, 0)),
        # 2/2 before 1/2, as a mail client may sort them; 1/2 quoted-printable (its "=" too)
        mail("[RFC PATCH 2/2] xen/gntdev: add get_policy", p["v1-2"], msgid="<p12@t>",
             date=d.format(1, 2), reply_to="<c1@t>"),
        mail(f"[RFC PATCH 1/2] {V1_TITLE}", p["v1-1"], msgid="<p11@t>", date=d.format(1, 1),
             reply_to="<c1@t>", encoding="quoted-printable"),
        # review: quoting the patch, and proposing an (unquoted) diff of its own
        mail(f"Re: [RFC PATCH 1/2] {V1_TITLE}", f"On Tue, Juergen wrote:\n{quoted}\nNo.\n",
             msgid="<r1@t>", date=d.format(2, 0), author=REVIEWER, reply_to="<p11@t>"),
        mail(f"Re: [RFC PATCH 0/2] {V1_TITLE}", "Simpler:\n\n" + p["v3-1"], msgid="<r2@t>",
             date=d.format(2, 1), author=REVIEWER, reply_to="<c1@t>"),
        # v2: patch 2/2 never made it into the mbox
        mail("[PATCH v2 0/2] xen/gntdev: mempolicy", "v2.\n", msgid="<c2@t>", date=d.format(3, 0)),
        mail("[PATCH v2 1/2] xen/gntdev: mempolicy", p["v1-1"], msgid="<p21@t>",
             date=d.format(3, 1), reply_to="<c2@t>"),
        # v3: a base64 attachment, and a base64 body whose threading a mail client dropped
        mail("[PATCH v3 0/2] xen/gntdev: Use mempolicy", "v3: rebased.\n", msgid="<c3@t>",
             date=d.format(4, 0)),
        with_attachment("[PATCH v3 1/2] xen/gntdev: drop VM_MIXEDMAP", v3_message, v3_diff,
                        msgid="<p31@t>", date=d.format(4, 1), reply_to="<c3@t>"),
        mail("[PATCH v3 2/2] xen/gntdev: add get_policy", p["v3-2"], msgid="<p32@t>",
             date=d.format(4, 2), encoding="base64"),
        # the same v3 re-sent
        mail("[PATCH v3 (re-send) 0/2] xen/gntdev: Use mempolicy", "v3 again.\n",
             msgid="<c3r@t>", date=d.format(5, 0)),
        mail("[PATCH v3 (re-send) 1/2] xen/gntdev: drop VM_MIXEDMAP", p["v3-1"],
             msgid="<p31r@t>", date=d.format(5, 1), reply_to="<c3r@t>"),
        mail("[PATCH v3 (re-send) 2/2] xen/gntdev: add get_policy", p["v3-2"],
             msgid="<p32r@t>", date=d.format(5, 2), reply_to="<c3r@t>"),
        crlf=True,
    )  # fmt: skip


@pytest.fixture
def root(kernel: Path, make_project: MakeProject) -> Path:
    return make_project(
        {
            "configs/main.yaml": f"""
                trees:
                  - name: linux
                    url: {kernel}
                profiles:
                  - name: small
                    base: tinyconfig
                hosts:
                  - name: qemu
                    kind: qemu
                jobs:
                  - name: stress
                    program: gntstress
                """,
        }
    )


EXPECTED_YAML = """\
name: mp
title: 'xen/gntdev: Use mempolicy'
question: |
  How do the posted versions of 'xen/gntdev: Use mempolicy' (v1, v3) behave on the same tree?
origin: |
  Imported from thread.mbox by `kbisect variants.import`; the thread starts with <c1@t>.
variants:
  - name: v1
    description: 'v1 of ''xen/gntdev: Use mempolicy instead of VM_IO flag'' (2 patches, 2016-11-01)'
    patches:
    - v1/0001-xen-gntdev-use-mempolicy-instead-of-vm-io-flag.patch
    - v1/0002-xen-gntdev-add-get-policy.patch
    origin:
      subject: '[RFC PATCH 0/2] xen/gntdev: Use mempolicy instead of VM_IO flag'
      author: Juergen Gross <jgross@suse.com>
      date: '2016-11-01T10:00:00+01:00'
      message_id: <c1@t>
  - name: v3
    description: 'v3 of ''xen/gntdev: Use mempolicy'' (2 patches, 2016-11-04)'
    patches:
    - v3/0001-xen-gntdev-drop-vm-mixedmap.patch
    - v3/0002-xen-gntdev-add-get-policy.patch
    origin:
      subject: '[PATCH v3 0/2] xen/gntdev: Use mempolicy'
      author: Juergen Gross <jgross@suse.com>
      date: '2016-11-04T10:00:00+01:00'
      message_id: <c3@t>
"""


def patch_file(subject: str, msgid: str, date: str, body: str) -> str:
    head = f"From: {AUTHOR}\nDate: {date}\nSubject: {subject}\nMessage-Id: {msgid}\n\n"
    return head + body.rstrip("\n") + "\n"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_thread_becomes_one_variant_per_complete_version(
    root: Path, patches: dict[str, str]
) -> None:
    (root / "thread.mbox").write_bytes(thread(patches))
    done = kb(root, "variants.import", "--mbox", "thread.mbox", "--experiment", "mp")
    assert done.returncode == 0, done.stderr
    assert "v2 left out: patch 2/2 is not in thread.mbox" in done.stdout
    assert "v3 (re-send) left out: the same patches as v3" in done.stdout
    exp = root / "seeds" / "mp"
    assert (exp / "experiment.yaml").read_text() == EXPECTED_YAML
    v1_date, v3_date = "2016-11-01T10:0{}:00+01:00", "2016-11-04T10:0{}:00+01:00"
    v3_message, v3_diff = patches["v3-1"].split("---\n", 1)
    assert snapshot(exp) == {
        "experiment.yaml": EXPECTED_YAML.encode(),
        "v1/0001-xen-gntdev-use-mempolicy-instead-of-vm-io-flag.patch": patch_file(
            f"[RFC PATCH 1/2] {V1_TITLE}", "<p11@t>", v1_date.format(1), patches["v1-1"]
        ).encode(),
        "v1/0002-xen-gntdev-add-get-policy.patch": patch_file(
            "[RFC PATCH 2/2] xen/gntdev: add get_policy", "<p12@t>", v1_date.format(2),
            patches["v1-2"],
        ).encode(),
        "v3/0001-xen-gntdev-drop-vm-mixedmap.patch": patch_file(
            "[PATCH v3 1/2] xen/gntdev: drop VM_MIXEDMAP", "<p31@t>", v3_date.format(1),
            v3_message.rstrip("\n") + "\n\n" + v3_diff,
        ).encode(),
        "v3/0002-xen-gntdev-add-get-policy.patch": patch_file(
            "[PATCH v3 2/2] xen/gntdev: add get_policy", "<p32@t>", v3_date.format(2),
            patches["v3-2"],
        ).encode(),
    }  # fmt: skip
    project = load_project(root)  # the project still checks
    assert [v.name for v in project.experiments["mp"].variants] == ["v1", "v3"]
    assert not [p for p in root.iterdir() if p.name.startswith(".variants-import")]


def test_reimport_is_idempotent_and_a_clash_needs_replace(
    root: Path, patches: dict[str, str]
) -> None:
    (root / "thread.mbox").write_bytes(thread(patches))
    assert kb(root, "variants.import", "thread.mbox", "--experiment", "mp").returncode == 0
    exp = root / "seeds" / "mp"
    before, inode = snapshot(exp), exp.stat().st_ino
    again = kb(root, "variants.import", "thread.mbox", "--experiment", "mp")
    assert again.returncode == 0, again.stderr
    assert "mp/v1             unchanged" in again.stdout
    assert snapshot(exp) == before and exp.stat().st_ino == inode  # not even rewritten

    # a v1 from another posting, its files under v9/, and a hand-written variant using
    # mine.patch: the import is refused and touches nothing
    yaml_text = before["experiment.yaml"].decode()
    clash = yaml_text.replace(
        "variants:\n", "variants:\n  - {name: v9, description: mine, patches: [mine.patch]}\n"
    )
    clash = clash.replace("v1/", "v9/").replace("message_id: <c1@t>", "message_id: <elsewhere@t>")
    (exp / "experiment.yaml").write_text(clash)
    (exp / "v1").rename(exp / "v9")
    (exp / "mine.patch").write_text(patches["v1-1"])
    state = snapshot(exp)
    refused = kb(root, "variants.import", "thread.mbox", "--experiment", "mp")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "kbisect: variant mp/v1 exists and was not imported from <c1@t>: give --prefix for "
        "other names, or --replace"
    ]
    assert snapshot(exp) == state

    replaced = kb(root, "variants.import", "thread.mbox", "--experiment", "mp", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "mp/v1             replaced" in replaced.stdout
    after = snapshot(exp)
    text = after["experiment.yaml"].decode()
    assert text.startswith(yaml_text.split("variants:\n")[0])  # the head as it was
    assert "  - {name: v9, description: mine, patches: [mine.patch]}\n" in text
    assert "message_id: <elsewhere@t>" not in text and text.count("message_id: <c1@t>") == 1
    assert "mine.patch" in after  # still used by v9
    assert not any(name.startswith("v9/") for name in after)  # the old v1's files are gone
    assert [v.name for v in load_project(root).experiments["mp"].variants] == ["v9", "v1", "v3"]


def test_into_an_existing_experiment_its_comments_and_variants_stay(
    root: Path, patches: dict[str, str]
) -> None:
    existing = textwrap.dedent(
        """\
        name: gntdev
        title: t
        question: q
        # hand-written variants first
        variants:
          - name: vm-io
            description: d
            patches: [vm-io.patch]
            # a comment inside an entry
            expect: {default: pass}

        # trailing comment
        """
    )
    (root / "seeds" / "gntdev").mkdir(parents=True)
    (root / "seeds" / "gntdev" / "experiment.yaml").write_text(existing)
    (root / "seeds" / "gntdev" / "vm-io.patch").write_text(patches["v1-1"])
    (root / "thread.mbox").write_bytes(thread(patches))
    done = kb(root, "variants.import", "thread.mbox", "-e", "gntdev", "--prefix", "mempolicy")
    assert done.returncode == 0, done.stderr
    text = (root / "seeds" / "gntdev" / "experiment.yaml").read_text()
    head, tail = existing.split("\n\n")
    assert text.startswith(head + "\n  - name: mempolicy-v1\n")
    assert text.endswith("\n\n" + tail)
    variants = load_project(root).experiments["gntdev"].variants
    assert [v.name for v in variants] == ["vm-io", "mempolicy-v1", "mempolicy-v3"]
    assert variants[2].origin is not None and variants[2].origin.message_id == "<c3@t>"


def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    root: Path, patches: dict[str, str]
) -> None:
    (root / "notes.yaml").write_text("\nname: not mail\n")
    review_only = mbox(
        mail("Re: [PATCH 1/2] x", "> diff --git a/x b/x\n", msgid="<r@t>", date="1 Nov 2016")
    )
    (root / "review.mbox").write_bytes(review_only)
    half = mbox(
        mail("[PATCH 1/2] x", patches["v1-1"], msgid="<a@t>", date="Tue, 1 Nov 2016 10:00:00 +0000")
    )
    (root / "half.mbox").write_bytes(half)
    cases = {
        "notes.yaml": "notes.yaml:2: expected an mbox (a 'From ' line before each message), "
        "got 'name: not mail'",
        "review.mbox": "review.mbox: no complete patch series found (1 messages, none of them "
        "a patch)",
        "half.mbox": "half.mbox: no complete patch series found (v1 left out: patch 2/2 is "
        "not in half.mbox)",
        "nothing.mbox": "nothing.mbox: cannot read: No such file or directory",
    }
    for name, message in cases.items():
        done = kb(root, "variants.import", name, "--experiment", "x")
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr.splitlines() == [f"kbisect: {message}"], name
    assert not (root / "seeds").exists()
    assert sorted(p.name for p in root.iterdir()) == [
        "configs",
        "half.mbox",
        "notes.yaml",
        "review.mbox",
    ]  # no temporary directory left behind either


# -- on a real tree --------------------------------------------------------------------------


def test_a_version_that_does_not_apply_is_imported_and_skipped(
    root: Path, patches: dict[str, str]
) -> None:
    (root / "thread.mbox").write_bytes(thread(patches))
    assert kb(root, "variants.import", "thread.mbox", "--experiment", "mp").returncode == 0
    project = load_project(root)
    tree = repos.open_tree(project, "linux")
    outcomes = {}
    for name in ("mp/v1", "mp/v3"):
        with slot(project, tree) as path:
            result = checkout(project, tree, "v3", find_variant(project, name), path)
            outcomes[name] = (result.outcome, result.conflicts)
            if result.usable:
                text = (path / GNTDEV).read_text()
                assert "/* mpol */" in text and "VM_MIXEDMAP" not in text
    assert outcomes == {
        "mp/v1": ("does-not-apply", [GNTDEV]),
        "mp/v3": ("applied", []),
    }
    # and a run of the cell records a SKIP that says why, without building or booting anything
    run = kb(root, "run", "--tree", "linux", "--rev", "v3", "--variant", "mp/v1", "--job", "stress")
    assert run.returncode == 0, run.stderr
    assert "SKIP" in run.stdout and "mp/v1 does not apply to v3" in run.stdout
