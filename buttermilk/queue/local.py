"""The embedded queue: a SQLite file with leases, shared safely by processes on one machine.

A message is visible when ``visible_at <= now``. Receiving sets ``visible_at`` to the
end of the lease and a fresh lease token; ack, nack and extend only act while that token
is still the message's, so a worker whose lease ran out cannot touch a message that
another worker has received since.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio

from buttermilk.errors import QueueError
from buttermilk.queue.base import Delivery, JobMessage, Queue, parse_body

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    batch_id TEXT,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL,
    lease TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_messages_ready ON messages (channel, visible_at);
CREATE INDEX IF NOT EXISTS ix_messages_batch ON messages (batch_id, visible_at);
"""
INSERT = (
    "INSERT INTO messages (channel, batch_id, body, visible_at, created_at) VALUES (?, ?, ?, ?, ?)"
)
MIN_POLL = 0.01


class LocalQueue(Queue):
    """Jobs in a SQLite file (the default transport: no services needed)."""

    name = "local"
    filters_by_batch = True
    receive_cancellable = True

    def __init__(
        self, path: str | Path, *, lease_seconds: float = 30.0, poll_interval: float = 0.2
    ) -> None:
        self.path = Path(path).expanduser()
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        """The open connection; the file is opened on first use (under ``_lock``), so that
        commands which need only the store (list, status, export) never touch it."""
        if self._conn is not None:
            return self._conn
        if self._closed:
            raise QueueError(f"the local queue at {self.path} is closed")
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            raise QueueError(f"cannot open the local queue at {self.path}: {exc}") from None
        self._conn = conn
        return conn

    async def prepare(self, *, interactive: bool) -> None:
        """Open (or make) the file now: a worker or a create that cannot use it says so at
        the start, in one line."""

        def open_now() -> None:
            with self._lock:
                self._connection()

        await anyio.to_thread.run_sync(open_now)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one immediate transaction (serialised within this process)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise QueueError(f"local queue {self.path}: {exc}") from None

    async def publish(self, messages: Sequence[JobMessage]) -> None:
        now = time.time()
        rows = [(m.channel, m.batch_id, m.encode(), now, now) for m in messages]

        await anyio.to_thread.run_sync(self._execute_many, INSERT, rows)

    def publish_raw(
        self, body: bytes, *, channel: str = "jobs", batch_id: str | None = None
    ) -> None:
        """Put an arbitrary body on the queue (for tests of malformed messages)."""
        now = time.time()
        self._execute_many(INSERT, [(channel, batch_id, body, now, now)])

    def _take(self, max_messages: int, channel: str, batch_id: str | None) -> list[Delivery]:
        token = secrets.token_hex(8)
        where = "channel = ? AND visible_at <= ?"
        if batch_id is not None:
            where = "batch_id = ? AND " + where

        def take(conn: sqlite3.Connection) -> list[tuple[int, bytes, int]]:
            now = time.time()  # under the lock: the lease starts when it is granted
            args: list[object] = [channel, now] if batch_id is None else [batch_id, channel, now]
            return conn.execute(
                "UPDATE messages SET visible_at = ?, attempts = attempts + 1, lease = ? "
                f"WHERE id IN (SELECT id FROM messages WHERE {where} "
                "ORDER BY visible_at, id LIMIT ?) "
                "RETURNING id, body, attempts",
                [now + self.lease_seconds, token, *args, max_messages],
            ).fetchall()

        rows = self._call(take)
        rows.sort(key=lambda r: r[0])
        deliveries = []
        for msg_id, body, attempts in rows:
            message, problem = parse_body(bytes(body))
            deliveries.append(
                Delivery(self, (msg_id, token), bytes(body), message, problem, attempts)
            )
        return deliveries

    async def receive(
        self,
        max_messages: int,
        *,
        interactive: bool = False,
        batch_id: str | None = None,
        wait: float = 1.0,
    ) -> list[Delivery]:
        channel = "interactive" if interactive else "jobs"
        deadline = time.monotonic() + wait
        pause = MIN_POLL
        while True:
            # Shielded: a cancellation lands in the wait below, never between leasing
            # messages and handing them over (see receive_cancellable).
            with anyio.CancelScope(shield=True):
                found = await anyio.to_thread.run_sync(self._take, max_messages, channel, batch_id)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            await anyio.sleep(min(pause, remaining))
            pause = min(pause * 2, self.poll_interval)

    def _execute_many(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            # Close the cursor here, under the lock: a cursor finalised later, in
            # another thread, would reset its statement while that thread uses the
            # connection (SQLITE_MISUSE).
            conn.executemany(sql, rows).close()

        self._call(run)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        handles = [d.handle for d in deliveries]
        if handles:
            await anyio.to_thread.run_sync(
                self._execute_many, "DELETE FROM messages WHERE id = ? AND lease = ?", handles
            )

    async def nack(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        await self._show_after(deliveries, delay, release=True)

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        await self._show_after(deliveries, seconds, release=False)

    async def _show_after(
        self, deliveries: Sequence[Delivery], seconds: float, *, release: bool
    ) -> None:
        """Make held messages visible again in ``seconds``; ``release`` also ends the lease."""
        visible = time.time() + seconds
        rows = [(visible, msg_id, token) for msg_id, token in (d.handle for d in deliveries)]
        lease = ", lease = NULL" if release else ""
        if rows:
            await anyio.to_thread.run_sync(
                self._execute_many,
                f"UPDATE messages SET visible_at = ?{lease} WHERE id = ? AND lease = ?",
                rows,
            )

    def depth(self) -> int:
        """How many messages are on the queue, leased or not."""
        return int(
            self._call(lambda conn: conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        )

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
