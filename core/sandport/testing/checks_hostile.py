"""A hostile sandbox: what its program leaves behind must not harm the host or the caller.

Transfers copy content the sandbox chose (link chains, setuid bits, names that are not
UTF-8, trees deeper than Python's recursion limit); the file API must act on the path the
caller named, never on what a symlink behind a trailing ``/`` points to, and must not
replace a directory with a file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest

from sandport.sandbox import Sandbox
from sandport.testing._support import Canary
from sandport.testing.base import ConformanceBase

__all__ = ["HostileChecks"]

_DEPTH = 1200
# Names that are not valid UTF-8, and one that is, as the sandbox's programs can make them.
_FILES = [b"caf\xe9.txt", b"\xff\xfe", b"half-\xe2\x82", b"\x80 lead and space", b"plain-\xc3\xa9"]
_DIR, _INNER, _LINK, _NEW = b"dir-\xfa", b"inner-\xfb", b"link-\xfc", b"new-\xfd"
_ASCII_LINK = b"ascii-link"  # an ASCII name for a link whose target is not UTF-8


def _octal(name: bytes) -> str:
    """``name`` as a ``printf`` format of octal escapes: ASCII, whatever the bytes."""
    return "".join(f"\\{b:03o}" for b in name)


def _named(name: bytes) -> str:
    """A shell word that expands to ``name``."""
    return f"\"$(printf '{_octal(name)}')\""


def _links_out(dest: Path) -> list[str]:
    """Symlinks under ``dest`` that lead outside it, as the host resolves them."""
    root = dest.resolve()
    found = []
    for directory, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = Path(directory, name)
            resolved = Path(os.path.realpath(path))
            if path.is_symlink() and resolved != root and root not in resolved.parents:
                found.append(f"{path.relative_to(dest)} -> {os.readlink(path)}")
    return found


def _read(*parts: bytes) -> bytes:
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def _write(data: bytes, *parts: bytes) -> None:
    with open(os.path.join(*parts), "wb") as f:
        f.write(data)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


class HostileChecks(ConformanceBase):
    async def test_download_of_a_link_chain_never_leads_out(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """``x -> .``, ``y0 -> x/..``, ``y1 -> y0/..``... each stay inside the tree as text,
        but on the host each hop climbs one real directory. A second download into the
        same destination, with files where the links were, must not write through them."""
        canary = Canary(tmp_path / "host")
        dest = tmp_path / "a" / "b" / "dest"  # on the host, y2 would be tmp_path
        chain = "ln -s . x && ln -s x/.. y0 && ln -s y0/.. y1 && ln -s y1/.. y2 && ln -s y2/.. y3"
        await sandbox.exec(["sh", "-c", f"mkdir tree && cd tree && {chain} && ln -s y2/host/canary.txt e && "
                            "ln -s y2/host d && echo inside > real.txt"], check=True)  # fmt: skip
        await sandbox.download("tree", dest)
        assert canary.intact(), "the first download changed the host"
        assert _links_out(dest) == [], "a download made a symlink that leads out of its destination"
        assert (dest / "real.txt").read_bytes() == b"inside\n"
        await sandbox.exec(["sh", "-c", "cd tree && rm e d && echo pwned > e && mkdir d && echo pwned > d/new.txt"],
                           check=True)  # fmt: skip
        await sandbox.download("tree", dest)
        assert canary.intact(), "the second download wrote through a symlink into the host"
        assert not (dest / "e").is_symlink() and (dest / "e").read_bytes() == b"pwned\n"
        assert not (dest / "d").is_symlink() and (dest / "d" / "new.txt").read_bytes() == b"pwned\n"
        assert _links_out(dest) == []

    async def test_transfers_drop_setuid_setgid_and_sticky(self, sandbox: Sandbox, tmp_path: Path) -> None:
        made = await sandbox.exec(["sh", "-c", "mkdir -p bits/sticky bits/sgid-dir && printf '#!/bin/sh\\n' > bits/suid"
                                   " && cp bits/suid bits/sgid && chmod 4755 bits/suid && chmod 2755 bits/sgid"
                                   " && chmod 1777 bits/sticky && chmod 2755 bits/sgid-dir && stat -c %a bits/suid"],
                                  check=True)  # fmt: skip
        assert made.text.strip() == "4755", "the sandbox could not set the setuid bit, so this check proves nothing"
        await sandbox.download("bits", tmp_path / "down")
        await sandbox.download("bits/suid", tmp_path / "one-file")
        assert _modes(tmp_path / "down") == {".": 0o755, "suid": 0o755, "sgid": 0o755, "sticky": 0o777,
                                             "sgid-dir": 0o755}  # fmt: skip
        assert stat.S_IMODE((tmp_path / "one-file").stat().st_mode) == 0o755

        source = tmp_path / "src"
        (source / "sticky").mkdir(parents=True)
        for name, mode in (("suid", 0o4755), ("sgid", 0o2755)):
            (source / name).write_text("#!/bin/sh\n")
            (source / name).chmod(mode)
        (source / "sticky").chmod(0o1777)
        await sandbox.upload(source, "up")
        await sandbox.upload(source / "suid", "up-one")
        modes = await sandbox.exec(["stat", "-c", "%n %a", "up/suid", "up/sgid", "up/sticky", "up-one"], check=True)
        assert modes.text.split("\n")[:-1] == ["up/suid 755", "up/sgid 755", "up/sticky 777", "up-one 755"]

    @pytest.mark.parametrize("spelling", ["lnk/", "lnk/."])
    async def test_remove_of_a_link_with_trailing_slash_keeps_its_target(self, sandbox: Sandbox, spelling: str) -> None:
        setup = "mkdir -p target/sub && echo keep > target/keep.txt && echo keep > target/sub/deeper.txt"
        await sandbox.exec(["sh", "-c", setup + " && ln -s target lnk"], check=True)
        await sandbox.remove(spelling, recursive=True)
        assert "lnk" not in {e.name for e in await sandbox.list_dir(".")}
        assert await sandbox.read_file("target/keep.txt") == b"keep\n"
        assert await sandbox.read_file("target/sub/deeper.txt") == b"keep\n"
        await sandbox.exec(["ln", "-s", "target", "lnk"], check=True)
        await sandbox.remove(spelling)
        assert "lnk" not in {e.name for e in await sandbox.list_dir(".")}
        assert await sandbox.read_file("target/keep.txt") == b"keep\n"

    async def test_upload_of_a_file_onto_a_directory_is_refused(self, sandbox: Sandbox, tmp_path: Path) -> None:
        await sandbox.write_file("d/inner.txt", "keep")
        await sandbox.write_file("marker.txt", "keep")
        (tmp_path / "file.txt").write_text("new")
        for remote in ("d", ".", sandbox.spec.workdir):
            with pytest.raises(IsADirectoryError):
                await sandbox.upload(tmp_path / "file.txt", remote)
        assert (await sandbox.stat(sandbox.spec.workdir)).is_dir
        assert await sandbox.read_file("d/inner.txt") == b"keep"
        assert await sandbox.read_file("marker.txt") == b"keep"

    async def test_names_that_are_not_utf8_round_trip(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """The API shows such names as ``os.fsdecode`` does (surrogate escapes) and every
        operation takes them back, meaning the same bytes."""
        made = [f"printf 'content-{i}' > {_named(name)}" for i, name in enumerate(_FILES)]
        made += [f"mkdir {_named(_DIR)}", f"printf inner > {_named(_DIR + b'/' + _INNER)}"]
        made += [f"ln -s {_named(_FILES[0])} {_named(link)}" for link in (_LINK, _ASCII_LINK)]
        await sandbox.exec(["sh", "-c", "mkdir nu && cd nu && " + " && ".join(made)], check=True)
        names = {os.fsdecode(n) for n in [*_FILES, _DIR, _LINK, _ASCII_LINK]}
        assert {e.name for e in await sandbox.list_dir("nu")} == names
        for i, name in enumerate(_FILES):
            path = "nu/" + os.fsdecode(name)
            assert await sandbox.read_file(path) == f"content-{i}".encode()
            assert (await sandbox.stat(path)).size == len(f"content-{i}")
        for link in (_LINK, _ASCII_LINK):
            assert await sandbox.read_file("nu/" + os.fsdecode(link)) == b"content-0"
            assert (await sandbox.stat("nu/" + os.fsdecode(link))).size == len("content-0")
        assert await sandbox.read_file(os.fsdecode(b"nu/" + _DIR + b"/" + _INNER)) == b"inner"
        await sandbox.write_file(os.fsdecode(b"nu/" + _DIR + b"/" + _NEW), b"written")
        await sandbox.mkdir(os.fsdecode(b"nu/" + _NEW))
        check = f"cat {_named(b'nu/' + _DIR + b'/' + _NEW)} && test -d {_named(b'nu/' + _NEW)}"
        assert (await sandbox.exec(["sh", "-c", check], check=True)).stdout == b"written"

        await sandbox.download("nu", tmp_path / "down")
        down = os.fsencode(tmp_path / "down")
        for i, name in enumerate(_FILES):
            assert _read(down, name) == f"content-{i}".encode()
        assert _read(down, _DIR, _INNER) == b"inner"
        if os.path.lexists(os.path.join(down, _LINK)):  # providers that copy symlinks
            assert os.readlink(os.path.join(down, _LINK)) == _FILES[0]

        source = os.fsencode(tmp_path / "src")
        os.makedirs(os.path.join(source, _DIR))
        _write(b"up-1", source, _FILES[1])
        _write(b"up-inner", source, _DIR, _INNER)
        await sandbox.upload(os.fsdecode(source), "up")
        read_back = f"cat {_named(b'up/' + _FILES[1])} {_named(b'up/' + _DIR + b'/' + _INNER)}"
        assert (await sandbox.exec(["sh", "-c", read_back], check=True)).stdout == b"up-1up-inner"

        for name in [*_FILES, _LINK, _ASCII_LINK, _NEW]:
            await sandbox.remove("nu/" + os.fsdecode(name))
        await sandbox.remove("nu/" + os.fsdecode(_DIR), recursive=True)
        assert await sandbox.list_dir("nu") == []

    async def test_deep_tree_download_and_remove(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A tree deeper than Python's recursion limit, as any program can make one."""
        make = f"i=0; while [ $i -lt {_DEPTH} ]; do mkdir d && cd d || exit 1; i=$((i+1)); done; echo bottom > leaf.txt"
        await sandbox.exec(["sh", "-c", "mkdir deep && cd deep && " + make], check=True, timeout=300)
        dest = tmp_path / "down"
        try:
            await sandbox.download("deep", dest)
            assert dest.joinpath(*["d"] * _DEPTH, "leaf.txt").read_bytes() == b"bottom\n"
        finally:  # pytest's own clean-up of tmp_path recurses, and would fail on it
            await anyio.run_process(["rm", "-rf", str(dest)], check=False)
        await sandbox.remove("deep", recursive=True)
        assert not await sandbox.exists("deep")
