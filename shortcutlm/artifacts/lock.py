"""One run at a time per output folder.

Two ``train --out D`` started together would both write ``D`` (a curve holding every step twice,
weights of one run with the settings of the other). A run holds an exclusive lock on a file in
its folder while it writes there; a second run is refused in one line naming the holder's PID
and host. The lock is the kernel's (``flock``), so a run killed with ``kill -9`` or a crashed
machine leaves nothing stuck: the kernel drops the lock with the process, and the next run takes
it over. The file is removed when the run ends (under the lock, and a run that took the lock
checks it still holds the file it opened, so a remove cannot let two runs in).

``filelock`` (a dependency of torch) takes the same kernel lock, but neither records nor reports
who holds it; the holder's PID and host are what a user needs to act, so the lock is written here.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from shortcutlm.core.errors import UserError

LOCK = ".shortcutlm.lock"


class FolderBusy(UserError):
    """Another run writes into the folder now."""


#: What launchers set to tell a process its rank: torchrun, Lightning's own launcher, SLURM, MPI, LSF.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "SLURM_NODEID",
                   "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JSM_NAMESPACE_RANK")


def first_process() -> bool:
    """This is the first process of a (possibly distributed) run: the one that holds the run's lock.

    Decided from the launchers' variables before the trainer exists (Lightning's own rank needs
    the trainer): every rank variable set is 0. The processes of one run on other nodes (which
    may share the output folder) or other devices are the same run, and take no lock."""
    return all(os.environ.get(name, "0").strip() in ("", "0") for name in _RANK_VARIABLES)


def lock_path(folder: str | Path, name: str = LOCK) -> Path:
    return Path(folder) / name


@contextmanager
def folder_lock(folder: str | Path, what: str, name: str = LOCK) -> Iterator[Path]:
    """Hold ``folder``'s lock (created with the folder if need be) for the body; :class:`FolderBusy`
    in one line when another process holds it. ``what`` says which command takes it."""
    path = lock_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, what)
    try:
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # releases the lock


def _acquire(path: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderBusy(f"{path.parent} is in use by another shortcutlm run ({holder}); wait for it to end, "
                             "or use another output folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file between our open and our lock: try again
            os.close(fd)
            continue
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[1:]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        return fd


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (it may still be writing it)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"{record.get('command', 'a run')}, PID {record['pid']} on {record['host']}, since {record['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "a process that is starting"
