"""Reading files someone else wrote: only regular files inside the reports folder, each up to a cap of bytes.

The folder the page is made from may hold anything a candidate, a broken tool or a person put there. So
the page opens a file only when, links followed, it lies inside the folder, and only when it is a regular
file: a FIFO (whose open waits for a writer), a device, a socket or a link out of the folder is never
opened. A file past its cap is never read whole. Each file not read comes back with the reason, for a
line in the page:

    data, why = read_capped(Path("reports/verify/x.json"), Path("reports"), MAX_JSON_BYTES)
    # data: bytes, why: None  -- or --  data: None, why: "a FIFO, not a regular file: not read"
"""
import fnmatch
import os
import stat
from pathlib import Path

MAX_JSON_BYTES = 64 * 2**20  # a verdict file: 20,000 results with samples are ~9 MB; a real run well under that
MAX_PARQUET_BYTES = 64 * 2**20  # a benchmark run: a full grid is a few hundred KB
MAX_FILES = 1000  # files read per folder: the newest by name (run ids start with the time), the rest counted

KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a link"))
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def inside(path, folder):
    """`path` with every link resolved when it lies inside `folder` (links resolved too), else None."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real if real == root or real.startswith(root.rstrip(os.sep) + os.sep) else None


def kind(mode):
    """What a file of st_mode `mode` is, in words ('a FIFO', 'a folder', ...; 'a regular file')."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((words for test, words in KINDS if test(mode)), "not a regular file")


def read_capped(path, folder, cap):
    """(the bytes of `path` | None, why it was not read | None).

    path: a file expected inside `folder`; cap: the most bytes read. Only a regular file inside `folder`
    is opened (no FIFO, device, socket or link out), without following a link (O_NOFOLLOW on the resolved
    path), and it is read only when it holds at most `cap` bytes.
    """
    real = inside(path, folder)
    if real is None:
        return None, f"a link out of {folder} (to {os.path.realpath(path)}): not read"
    try:
        before = os.lstat(real)
        if not stat.S_ISREG(before.st_mode):
            return None, f"{kind(before.st_mode)}, not a regular file: not read"
        if before.st_size > cap:
            return None, f"{before.st_size} bytes, over the cap of {cap} bytes ({cap / 2**20:g} MiB): not read"
        fd = os.open(real, OPEN_FLAGS)
    except OSError as error:
        return None, f"not opened ({type(error).__name__}: {error.strerror or error})"
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            return None, "replaced while it was opened: not read"
        data = _read_at_most(fd, cap + 1)
    except OSError as error:
        return None, f"not read ({type(error).__name__}: {error.strerror or error})"
    finally:
        os.close(fd)
    if len(data) > cap:
        return None, f"grew past the cap of {cap} bytes while it was read: not read"
    return data, None


def _read_at_most(fd, limit):
    """Up to `limit` bytes of the open file `fd`."""
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 2**20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def listing(folder, pattern, root, limit=MAX_FILES):
    """(the paths in `folder` whose names match `pattern`, sorted, the newest `limit` of them; notes).

    Nothing is listed when `folder` is a link out of `root` (a note says so). Entries are not opened here:
    read each with read_capped, which refuses what is not a regular file inside `root`.
    """
    folder = Path(folder)
    if not os.path.isdir(folder):
        return [], []
    if inside(folder, root) is None:
        return [], [f"{folder}: a link out of {root} (to {os.path.realpath(folder)}): not read"]
    try:
        names = sorted(name for name in os.listdir(folder)
                       if fnmatch.fnmatchcase(name, pattern) and not name.startswith("."))  # as glob
    except OSError as error:
        return [], [f"{folder}: not listed ({type(error).__name__}: {error.strerror or error})"]
    notes = [f"{folder}: {len(names) - limit} older file(s) of {len(names)} not read (at most {limit} per folder)"
             ] if len(names) > limit else []
    return [folder / name for name in names[-limit:]], notes
