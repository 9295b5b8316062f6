"""A TCP proxy between the service and PostgreSQL that can black-hole the network.

`blackhole()` stops moving bytes in both directions without closing a socket, as a partition or a
dead switch does: the service's connects are accepted but never answered, its queries are sent and
never answered, nobody sees a reset. `restore()` moves the held bytes on, as TCP's retransmissions
would once the path heals; `restore(lose_held=True)` instead abandons every connection the silence
caught, open and mute for good, as when the path comes back only after the peers' TCP state is gone
(PostgreSQL never learns that those clients left). The proxy runs its own event loop in a thread, so the load it carries
cannot slow it down.
"""

import asyncio
import contextlib
import threading
import time


class BlackholeProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="blackhole-proxy", daemon=True)
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # Set for the connections of one silence when they are abandoned; a new one per silence.
        self._lost = asyncio.Event()
        self.connections = 0

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)

    def blackhole(self) -> float:
        """Stop forwarding; returns the monotonic time it took effect."""
        asyncio.run_coroutine_threadsafe(self._set(False), self._loop).result(timeout=5)
        return time.monotonic()

    def restore(self, *, lose_held: bool = False) -> float:
        """Forward again: held bytes first, or (`lose_held`) only on connections made from now on.
        Returns the monotonic time it took effect."""
        asyncio.run_coroutine_threadsafe(self._set(True, lose_held=lose_held), self._loop).result(timeout=5)
        return time.monotonic()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _set(self, forwarding: bool, *, lose_held: bool = False) -> None:
        if forwarding:
            if lose_held:
                self._lost.set()
                self._lost = asyncio.Event()
            self._open.set()
        else:
            self._open.clear()

    async def _listen(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            # A connection accepted during a black-hole waits here: the client's connect succeeded at
            # the TCP level, its startup packet is never answered.
            lost = self._lost
            await self._open.wait()
            if lost.is_set():
                return await self._mute()
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            self._writers.add(upstream_writer)
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, lost),
                self._pump(upstream_reader, client_writer, lost),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lost: asyncio.Event) -> None:
        try:
            while True:
                # Not reading while black-holed leaves the bytes in the kernel's buffers, so the
                # sender sees neither an error nor an answer.
                await self._open.wait()
                if lost.is_set():
                    return await self._mute()
                data = await reader.read(65536)
                await self._open.wait()
                if lost.is_set():
                    return await self._mute()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        # One side ended: end the other, as the peers' own sockets would.
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()

    async def _mute(self) -> None:
        """An abandoned connection: its sockets stay open and nothing moves, until stop()."""
        await asyncio.Event().wait()

    async def _close(self) -> None:
        self._open.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
