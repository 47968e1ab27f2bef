"""The engine in a process of its own: the `Batcher` and the models, away from the HTTP layer.

Decoding is Python as much as torch: a speculative round issues hundreds of small operations,
each of which gives up and takes back the interpreter lock. In one process, the event loop's
own Python (parsing requests, formatting every streamed chunk) holds that lock in between, so
at many clients each small operation queues behind it. Here the HTTP process only speaks HTTP;
a spawned process loads the compositions from the same config and runs the batcher, and the two
exchange small messages over a pipe: requests and cancellations one way, each step's deltas
(one message per batch of events) the other. This is how serving engines split a front end from
their engine core.

`EngineProcess` answers the part of the `Batcher` interface the app uses (start, submit, cancel,
metrics, close), on the app's own `Job`s.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import pickle
import signal

from emulate.common.errors import EmulateError
from emulate.server.batcher import Batcher
from emulate.server.config import ServerConfig, build_compositions
from emulate.server.jobs import Job, Overloaded

log = logging.getLogger("emulate.server.engine")

START_TIMEOUT = 3600.0  # seconds to load every checkpoint (a 70B model from disk takes minutes)


class EngineProcess:
    """A `Batcher` running in a spawned process that builds `config`'s compositions itself."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self._ids = itertools.count()
        self._jobs: dict[int, Job] = {}  # key (the engine's name for a job) -> job
        self._keys: dict[Job, int] = {}
        self._submitted: dict[int, asyncio.Future] = {}
        self._stats: dict = {}
        self._process = None
        self._conn = None
        self._loaded = False

    def spawn(self) -> None:
        """Start the engine process, which begins loading the models at once."""
        if self._process is not None:
            return
        context = multiprocessing.get_context("spawn")  # never fork torch's thread pools
        self._conn, child = context.Pipe()
        self._process = context.Process(target=engine_main, args=(self.config, child),
                                        name="emulate-engine", daemon=True)
        self._process.start()
        child.close()

    def launch(self) -> None:
        """Spawn (unless spawned) and wait until the engine has loaded every model; raise what
        stopped it (a ConfigError naming the checkpoint, say). Before serving, so that the CLI
        can report it."""
        self.spawn()
        if self._loaded:
            return
        if not self._conn.poll(START_TIMEOUT):
            self._process.terminate()
            raise EngineGone(f"the engine did not load its models within {START_TIMEOUT:g} s")
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self._process.join(5)
            raise EngineGone("the engine process exited while loading the models (exit code "
                             f"{self._process.exitcode}); see its messages above") from None
        if kind != "ready":
            self._process.join(5)
            raise payload
        self._stats, self._loaded = payload, True

    async def start(self) -> None:
        """Launch (unless launched) and route the engine's messages from now on."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.launch)
        loop.add_reader(self._conn.fileno(), self._receive)

    async def close(self) -> None:
        if self._conn is None:
            return
        asyncio.get_running_loop().remove_reader(self._conn.fileno())
        try:
            self._conn.send(("close",))
        except (BrokenPipeError, OSError):
            pass
        await asyncio.get_running_loop().run_in_executor(None, self._process.join, 10)
        if self._process.is_alive():
            self._process.terminate()
        self._conn.close()
        self._conn = None
        self._fail_all(Overloaded("the server is shutting down"))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._conn is not None

    def metrics(self) -> dict:
        """The engine's counters as of its last message (it sends them with every batch)."""
        return dict(self._stats)

    async def submit(self, job: Job) -> None:
        """Queue `job` in the engine; raises what the engine's checks raise (see `Batcher`)."""
        key = next(self._ids)
        self._jobs[key], self._keys[job] = job, key
        self._submitted[key] = asyncio.get_running_loop().create_future()
        self._send(("submit", key, job.model, job.prompts, job.params, job.speculative))
        try:
            await self._submitted[key]
        except BaseException:
            self._forget(key)
            raise
        finally:
            self._submitted.pop(key, None)

    def cancel(self, job: Job) -> None:
        if job.cancelled or job.done.done():
            return
        job.abandon()
        key = self._keys.get(job)
        if key is not None:
            self._forget(key)
            self._send(("cancel", key))

    def _forget(self, key: int) -> None:
        job = self._jobs.pop(key, None)
        self._keys.pop(job, None)

    def _send(self, message) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError, AttributeError):
            self._engine_gone()

    def _receive(self) -> None:
        """The pipe is readable: route every message waiting in it."""
        try:
            while self._conn is not None and self._conn.poll():
                self._route(self._conn.recv())
        except (EOFError, OSError):
            self._engine_gone()

    def _route(self, message) -> None:
        kind = message[0]
        if kind == "events":
            _, events, self._stats = message
            for event in events:
                self._apply(event)
        elif kind in ("submitted", "refused"):
            future = self._submitted.get(message[1])
            if future is not None and not future.done():
                if kind == "submitted":
                    future.set_result(None)
                else:
                    future.set_exception(message[2])

    def _apply(self, event) -> None:
        kind, key = event[0], event[1]
        job = self._jobs.get(key)
        if job is None or job.cancelled:
            return
        if kind == "started":
            if not job.started.done():
                job.started.set_result(True)
        elif kind == "delta":
            _, _, row, text, finish_reason, completion = event
            job.deliver(row, text, finish_reason, completion)
        elif kind == "failed":
            job.fail(event[2])
        if job.done.done():
            self._forget(key)

    def _engine_gone(self) -> None:
        if self._conn is not None:
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None
        log.error("the engine process exited (exit code %s)",
                  self._process.exitcode if self._process else None)
        self._fail_all(EngineGone("the engine process exited; restart the server"))

    def _fail_all(self, error: Exception) -> None:
        for future in self._submitted.values():
            if not future.done():
                future.set_exception(error)
        for job in self._jobs.values():
            job.fail(error)
        self._jobs.clear()
        self._keys.clear()


class EngineGone(EmulateError, RuntimeError):
    """The engine process is no longer running (it crashed or was killed)."""


class Outbox:
    """Events bound for the front end, sent with the engine's counters as one message per turn
    of the engine's loop (the turn in which the engine thread computes the next step)."""

    def __init__(self, conn, batcher: Batcher):
        self.conn, self.batcher = conn, batcher
        self.events: list = []
        self.scheduled = False

    def put(self, event) -> None:
        self.events.append(event)
        self.refresh()

    def refresh(self) -> None:
        """Send the counters soon, even with no event (a cancellation changes them)."""
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        events, self.events = self.events, []
        try:
            self.conn.send(("events", events, self.batcher.metrics()))
        except (BrokenPipeError, OSError):  # the front end is gone; it failed its jobs itself
            pass


class RelayedJob(Job):
    """The engine side of an app's `Job`: what happens to it goes into the outbox."""

    def __init__(self, key: int, outbox: Outbox, model, prompts, params, speculative):
        super().__init__(model, prompts, params, speculative)
        self.key, self.outbox = key, outbox
        self.started.add_done_callback(self._started)

    def _started(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is None:
            self.outbox.put(("started", self.key))

    def deliver(self, row, text, finish_reason, completion) -> None:
        super().deliver(row, text, finish_reason, completion)
        self.outbox.put(("delta", self.key, row, text, finish_reason, completion))

    def fail(self, error: Exception) -> None:
        super().fail(error)
        self.outbox.put(("failed", self.key, _portable(error)))


def engine_main(config: ServerConfig, conn) -> None:
    """The engine process: build the compositions, then serve the pipe until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the front end, which closes us
    from emulate.common.cli import quiet_transformers

    quiet_transformers()
    try:
        compositions = build_compositions(config)
    except Exception as exc:  # noqa: BLE001 - whatever stops loading is the answer to launch()
        conn.send(("error", _portable(exc)))
        return
    try:
        asyncio.run(_serve(compositions, config, conn))
    except (BrokenPipeError, EOFError):  # the front end is gone: nothing left to serve
        pass


async def _serve(compositions: dict, config: ServerConfig, conn) -> None:
    settings = config.server
    batcher = Batcher(compositions, settings.max_batch, settings.max_cohorts, settings.max_queue,
                      settings.threads, settings.admit_wait)
    batcher.start()
    loop = asyncio.get_running_loop()
    jobs: dict[int, RelayedJob] = {}
    outbox = Outbox(conn, batcher)
    closed = loop.create_future()

    async def submit(job: RelayedJob) -> None:
        try:
            await batcher.submit(job)
        except Exception as exc:  # noqa: BLE001 - the front end raises it in the request
            jobs.pop(job.key, None)
            conn.send(("refused", job.key, _portable(exc)))
            return
        conn.send(("submitted", job.key))

    def receive() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "submit":
                    _, key, model, prompts, params, speculative = message
                    job = RelayedJob(key, outbox, model, prompts, params, speculative)
                    job.done.add_done_callback(lambda _, key=key: jobs.pop(key, None))
                    jobs[key] = job
                    loop.create_task(submit(job))
                elif message[0] == "cancel" and message[1] in jobs:
                    batcher.cancel(jobs.pop(message[1]))
                    outbox.refresh()
                elif message[0] == "close" and not closed.done():
                    closed.set_result(None)
        except (EOFError, OSError):  # the front end is gone
            if not closed.done():
                closed.set_result(None)

    loop.add_reader(conn.fileno(), receive)
    conn.send(("ready", batcher.metrics()))
    await closed
    loop.remove_reader(conn.fileno())
    await batcher.close()


def _portable(error: BaseException) -> BaseException:
    """`error` if it survives the pipe, else a plain EmulateError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return EmulateError(f"{type(error).__name__}: {error}")
