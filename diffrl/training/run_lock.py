"""One process per run directory, and no fresh run over another run's files."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil

from diffrl.training.run_directory import RunDirectory

logger = logging.getLogger("diffrl.training")


class RunDirectoryInUse(ValueError):
    """The run directory belongs to a running process or to another run; the message says which and what to do."""


class RunLock:
    """An exclusive ``flock`` on ``<run dir>/.diffrl.lock``, held for the run's life.

    The lock file records the holder's PID; the operating system releases the lock when the
    holder exits, however it exits (kill -9 included), so a stale file never blocks a run.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     with RunLock(RunDirectory(root), resuming=False):
        ...         RunLock(RunDirectory(root), resuming=True).acquire()
        Traceback (most recent call last):
        ...
        diffrl.training.run_lock.RunDirectoryInUse: run directory ... is in use by process ...
    """

    def __init__(self, layout: RunDirectory, *, resuming: bool) -> None:
        self.layout, self.resuming = layout, resuming
        self._file = None

    def acquire(self) -> RunLock:
        """Lock the directory, refuse it if another run owns it, and clear staging left by killed saves.

        Raises:
            RunDirectoryInUse: another process holds the lock, or (not resuming) the directory holds
                another run's checkpoints or MLflow store.
        """
        root = self.layout.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.layout.lock, "a+")  # held open (and locked) for the run's life
        except OSError as error:
            raise RunDirectoryInUse(f"hydra.run.dir={root} cannot be used: {error.strerror or error}") from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise RunDirectoryInUse(
                f"run directory {root} is in use by process {holder}: wait for it to end, stop it, or give this "
                "run another hydra.run.dir"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._file = lock_file
        try:
            if not self.resuming:
                self._refuse_other_run()
            self._remove_stale_staging()
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _refuse_other_run(self) -> None:
        layout = self.layout
        owned = [path.name for path in (layout.run_info, layout.mlflow_db) if path.exists()]
        latest = layout.latest_checkpoint()
        if latest is not None:
            owned.append(f"checkpoints/{latest.name}")
        if not owned:
            return
        owner = ""
        if layout.run_info.exists():
            try:
                owner = f" (MLflow run {json.loads(layout.run_info.read_text())['mlflow_run_id']})"
            except (OSError, ValueError, KeyError):
                owner = " (unreadable run.json)"
        resume = f"resume it with resume={latest}, or " if latest is not None else ""
        raise RunDirectoryInUse(
            f"hydra.run.dir={layout.root} already holds another run{owner} ({', '.join(owned)}): {resume}choose "
            "another directory (without hydra.run.dir each run gets a fresh timestamped one)"
        )

    def _remove_stale_staging(self) -> None:
        """Hidden ``.checkpoint-*.stage-*`` directories are saves a kill interrupted; under the lock no save runs."""
        if not self.layout.checkpoints.is_dir():
            return
        for stage in self.layout.checkpoints.glob(".*.stage-*"):
            shutil.rmtree(stage, ignore_errors=True)
            logger.info("removed %s, left by an interrupted checkpoint save", stage)
