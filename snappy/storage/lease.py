"""The writer lease: one writer per index at a time, on a local folder or ``s3://``.

Lance commits are atomic per table but two writers still corrupt an index (both insert the same
new keys; a fresh table loses one writer's rows). Every write therefore holds this lease.

The lease is a sequence of immutable records ``<index>/_lease/<epoch>.json``; the highest epoch
is the current state. A record is created only if its name is free (``Files.put_if_absent``: a
hard link locally, ``If-None-Match: *`` on S3), so of two writers that both try to take epoch
``n + 1`` exactly one succeeds. A record holds the holder, its run, host, pid, start time and an
expiry; the holder renews it (a new epoch, same holder) well before it expires, and releases it
with a ``released`` record. A holder that dies simply stops renewing: once ``expires_at`` passes,
anyone may take the next epoch. On the same host a holder whose process is gone is treated as
expired at once, so a killed local run does not block the next one for the whole TTL.

Writers check the lease (:meth:`Lease.check`) right before each commit: a holder that lost it
(paused past its expiry, then resumed) stops instead of committing. Clocks of writer hosts must
agree to well within the TTL (default 5 minutes).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Callable

from snappy.storage.fs import Files

log = logging.getLogger(__name__)

LEASE_DIR = "_lease"
KEEP_RECORDS = 16  # older epochs are deleted by the holder


class LeaseHeld(RuntimeError):
    """Another writer holds the index."""

    def __init__(self, index: str, record: "LeaseRecord"):
        self.record = record
        super().__init__(f"{index} is being written by {record.describe()}; "
                         f"its lease expires at {_iso(record.expires_at)} unless renewed")


class LeaseLost(RuntimeError):
    """This writer no longer holds the lease (it expired or was taken over): stop writing."""


@dataclass(frozen=True)
class LeaseRecord:
    epoch: int  # position in the sequence (the file name)
    holder: str  # unique id of the holding writer
    acquired_epoch: int  # epoch at which this holder acquired (stays the same across renewals)
    run_id: str | None
    host: str
    pid: int
    started_at: float  # POSIX seconds: when the holder acquired
    expires_at: float
    released: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "LeaseRecord":
        return cls(**json.loads(data))

    def describe(self) -> str:
        run = f"run {self.run_id}" if self.run_id else "a writer"
        return f"{run} (host {self.host}, pid {self.pid}) since {_iso(self.started_at)}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True


def is_free(current: LeaseRecord | None, now: float, host: str,
            alive: Callable[[int], bool] = pid_alive) -> bool:
    """Whether a new holder may take the lease over ``current`` (the highest record)."""
    if current is None or current.released or now >= current.expires_at:
        return True
    return current.host == host and not alive(current.pid)  # its process is gone: no need to wait


def state(record: LeaseRecord | None, now: float | None = None, host: str | None = None,
          alive: Callable[[int], bool] = pid_alive) -> dict | None:
    """The lease as an operator sees it (None: never leased): the record's fields, ``holder_text``,
    ``state`` (``held`` | ``stale`` | ``released``) and, when stale, ``stale_reason``. A stale
    lease (expired, or its process gone on this host) is taken over by the next writer."""
    if record is None:
        return None
    now = time.time() if now is None else now
    reason = None
    if record.released:
        st = "released"
    elif now >= record.expires_at:
        st, reason = "stale", f"it expired at {_iso(record.expires_at)}"
    elif record.host == (host or socket.gethostname()) and not alive(record.pid):
        st, reason = "stale", f"its process (pid {record.pid}) is gone"
    else:
        st = "held"
    return {**asdict(record), "holder_text": record.describe(), "state": st, "stale_reason": reason}


def record_name(epoch: int) -> str:
    return f"{LEASE_DIR}/{epoch:012d}.json"


class Lease:
    """One writer's claim on an index location; use as a context manager or acquire/release.

    ``ttl_s``: how long a record is valid without renewal; ``renew_every_s`` (default ttl/5) is
    how often the keep-alive thread renews while held.
    """

    def __init__(self, files: Files, run_id: str | None = None, ttl_s: float = 300.0,
                 renew_every_s: float | None = None, clock: Callable[[], float] = time.time):
        if ttl_s <= 0:
            raise ValueError(f"lease ttl_s must be > 0, got {ttl_s}")
        self.files, self.run_id, self.ttl_s = files, run_id, float(ttl_s)
        self.renew_every_s = renew_every_s or self.ttl_s / 5
        self.clock = clock
        self.holder = uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.record: LeaseRecord | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: Exception | None = None  # set by the keep-alive thread
        self.previous: LeaseRecord | None = None  # the unreleased record this writer took over, if any

    # ------------------------------------------------------------------ reading
    def current(self) -> LeaseRecord | None:
        """The highest record, or None if the index was never leased."""
        names = [n for n in self.files.list(LEASE_DIR) if n.endswith(".json")]
        for name in reversed(names):
            data = self.files.get(f"{LEASE_DIR}/{name}")
            if data is not None:
                return LeaseRecord.from_json(data)
        return None

    @property
    def epoch(self) -> int:
        """The epoch at which this writer acquired (unique per acquisition; orders writers)."""
        if self.record is None:
            raise LeaseLost("the lease is not held")
        return self.record.acquired_epoch

    # ------------------------------------------------------------------ acquiring
    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> LeaseRecord:
        """Take the lease, waiting up to ``wait_s`` for the current holder; LeaseHeld if it does not free up."""
        deadline = self.clock() + max(wait_s, 0.0)
        while True:
            cur = self.current()
            now = self.clock()
            if is_free(cur, now, self.host):
                epoch = (cur.epoch + 1) if cur else 1
                rec = LeaseRecord(epoch=epoch, holder=self.holder, acquired_epoch=epoch, run_id=self.run_id,
                                  host=self.host, pid=self.pid, started_at=now, expires_at=now + self.ttl_s)
                if self.files.put_if_absent(record_name(epoch), rec.to_json()):
                    if cur is not None and not cur.released:
                        self.previous = cur
                        log.warning("took over the lease of %s (expired or its process is gone)", cur.describe())
                    self.record = rec
                    self._gc(epoch)
                    return rec
                continue  # another writer took this epoch first: look again
            if now >= deadline:
                raise LeaseHeld(self.files.root, cur)
            time.sleep(min(poll_s, max(deadline - now, 0.01)))

    def _next(self, **changes) -> LeaseRecord:
        """Write the record after ours (renewal or release); LeaseLost if someone else got there."""
        with self._lock:
            if self.record is None:
                raise LeaseLost("the lease is not held")
            cur = self.current()
            if cur is None or cur.holder != self.holder or cur.epoch != self.record.epoch:
                raise LeaseLost(f"{self.files.root}: lease lost to {cur.describe() if cur else 'nobody'}")
            rec = replace(cur, epoch=cur.epoch + 1, **changes)
            if not self.files.put_if_absent(record_name(rec.epoch), rec.to_json()):
                raise LeaseLost(f"{self.files.root}: lease taken over while renewing")
            self.record = rec
            return rec

    def renew(self) -> LeaseRecord:
        rec = self._next(expires_at=self.clock() + self.ttl_s)
        self._gc(rec.epoch)
        return rec

    def check(self, margin_s: float | None = None) -> None:
        """Raise LeaseLost unless this writer holds the lease for at least ``margin_s`` more (default ttl/4)."""
        if self.lost is not None:
            raise LeaseLost(str(self.lost))
        cur = self.current()
        margin = self.ttl_s / 4 if margin_s is None else margin_s
        if self.record is None or cur is None or cur.holder != self.holder or cur.released:
            raise LeaseLost(f"{self.files.root}: lease held by {cur.describe() if cur else 'nobody'}, not by this writer")
        if self.clock() + margin >= cur.expires_at:
            self.renew()

    def release(self) -> None:
        self._stop_keepalive()
        if self.record is None:
            return
        try:
            self._next(released=True, expires_at=self.clock())
        except LeaseLost as e:
            log.warning("%s", e)
        finally:
            self.record = None

    # ------------------------------------------------------------------ keep-alive
    def start_keepalive(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._keepalive, name="snappy-lease", daemon=True)
        self._thread.start()

    def _keepalive(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            try:
                self.renew()
            except LeaseLost as e:
                self.lost = e
                log.error("%s", e)
                return
            except Exception as e:  # a transient storage error: try again at the next tick
                log.warning("lease renewal failed (will retry): %s", e)

    def _stop_keepalive(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None

    def _gc(self, epoch: int) -> None:
        for name in self.files.list(LEASE_DIR):
            try:
                n = int(name.split(".", 1)[0])
            except ValueError:
                continue
            if n < epoch - KEEP_RECORDS:
                self.files.delete(f"{LEASE_DIR}/{name}")

    def __enter__(self) -> "Lease":
        if self.record is None:
            self.acquire()
        self.start_keepalive()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
