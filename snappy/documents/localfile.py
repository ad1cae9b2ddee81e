"""Local files as documents: open one without ever blocking, name it by its bytes.

``open_local_fd`` refuses what is not a regular file (FIFOs, devices, sockets, directories,
broken links) with a :class:`DocumentError` and turns the rest of ``open``'s failures (gone,
permission, I/O) into a :class:`SourceReadError`.
"""
from __future__ import annotations

import errno
import os
import stat

from snappy.errors import DocumentError, SourceReadError


def _display(raw: bytes) -> tuple[str, bytes | None]:
    """(display uri, raw bytes if the name is not valid UTF-8 else None)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), raw


_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISLNK, "symbolic link"))


def _file_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "regular"
    for test, name in _KINDS:
        if test(mode):
            return name
    return "unknown file type"


def _not_regular(mode: int) -> str:
    kind = _file_kind(mode)
    return "is a directory, not a document" if kind == "directory" else f"not a regular file ({kind})"


def _strerror(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)


def open_local_fd(path: str | bytes | os.PathLike, uri: str) -> tuple[int, os.stat_result]:
    """Open a local document without ever blocking (FIFOs, devices) and check it is a regular
    file. Returns (fd, fstat); the caller closes fd. DocumentError for what is the file's fault,
    SourceReadError for the rest (gone, permission, I/O)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise _open_error(path, uri, e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DocumentError(uri, _not_regular(st.st_mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _open_error(path, uri: str, e: OSError) -> Exception:
    if e.errno == errno.ELOOP:
        return DocumentError(uri, "symbolic link loop")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return DocumentError(uri, "broken symbolic link (target missing)")
        except OSError:
            pass
        return SourceReadError(uri, "file not found (deleted or moved since listing?)")
    if e.errno == errno.ENXIO:  # a socket, or a device without a driver
        try:
            return DocumentError(uri, _not_regular(os.stat(path).st_mode))
        except OSError:
            pass
    if e.errno == errno.ENAMETOOLONG:
        return DocumentError(uri, "file name too long")
    if e.errno in (errno.EACCES, errno.EPERM):
        return SourceReadError(uri, "permission denied")
    return SourceReadError(uri, f"cannot open file ({_strerror(e)})")
