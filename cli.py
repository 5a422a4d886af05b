"""cli.py -- the command-line kit every script shares; imports nothing of the project (the bottom of the graph).

Inside, in this order:
  * text files: `text_lines` (UTF-8 lines, one error naming file and line);
  * writes: `atomic_write` (temporary + fsync + rename; stale temporaries of dead processes removed),
    `check_output_path` (an output is writable and is not one of the run's inputs), `RunLock` (one process per
    run folder, stale locks of dead processes taken over);
  * flags: `ArgumentParser` (one-line usage errors), `add_common_args` (--data-root, --device, --batch-size,
    --num-workers, --seed, --skip-bad, --debug);
  * running: `resolve_device`, `default_num_workers`, `run_cli` (one-line errors, exit 1 / 130 / 143), `Terminated`,
    `first_line`;
  * progress: `Progress` (rate and ETA), `format_seconds`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

# ----------------------------------------------------------------------------- text files


def text_lines(path: Path, what: str):
    """(line number, line) of a UTF-8 text file (a BOM is dropped); a line that is not UTF-8 is one ValueError
    naming the file and the line -- never a UnicodeDecodeError's byte offset. Used for every protocol, score and
    ASV file of the project (data.py and explain.py read theirs through it too)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path.name} line {n}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                                 f"{e.start + 1}); expected a plain-text {what}") from None  # fmt: skip
            yield n, line.removeprefix("\ufeff") if n == 1 else line


# ----------------------------------------------------------------------------- writes


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside `path`; when the block ends without error, fsync it and rename it over `path`.

    The project's one atomic write (data.py, train.py, evaluate.py, explain.py and bench.py import it): a crash,
    Ctrl-C or SIGTERM never leaves half a checkpoint, score file or plot behind; the file gets the umask's
    permissions, like a plain `open`. A kill -9 in the middle leaves the temporary `.NAME.PID.TID.tmp`; the next
    write of the same file removes those whose process is gone. Use:
    `with atomic_write(p, "wb") as f: torch.save(obj, f)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the `.NAME.PID.TID.tmp` files of `atomic_write`s to `path` whose process no longer runs (killed
    mid-write); returns them. Temporaries of live processes (another rank, another thread) are left alone."""
    return _remove_dead_writers(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))


def _remove_dead_writers(temporaries) -> list[Path]:
    """The `.NAME.PID.TID.tmp` files among `temporaries` whose writing process is gone, removed; returns them. The
    one reading of the temporary's name, for `remove_stale_temporaries` and `remove_stale_in`."""
    removed = []
    for tmp in temporaries:
        parts = tmp.name[1:].rsplit(".", 3)  # NAME (may hold dots), PID, TID, "tmp"
        if len(parts) == 4 and parts[1].isdigit() and not pid_alive(int(parts[1])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    """A file name with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (signal 0: permission errors mean it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- flags, devices, errors, progress


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (`prog: error: what (see prog --help)`, exit status 2) instead of
    the usage block and the error; every script of the project builds its flags with it."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def check_output_path(path: str | os.PathLike, flag: str, folder: bool = False) -> Path:
    """Make sure an output can be written before any work is done; returns the path.

    Creates the parent folder (or the folder itself with `folder`) and writes and removes a probe file there.

    Raises:
        ValueError: a file path that is a folder, or a folder path that is a file. OSError: one line naming the flag
            and the path when the folder cannot be created or written.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; expected a file path (e.g. {path / 'scores.txt'})")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; expected a folder")
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".write-probe.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(f"{flag} {path}: cannot write in {where} ({e.strerror or e}); choose another {flag}") from None
    return path


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """The path of an input file that exists, or one error saying what is there instead (a folder, nothing).

    Raises:
        FileNotFoundError: "`what` PATH not found" or "`what` PATH is a folder, expected a file".
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{what} {path} is a folder, expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same inode when both exist (hard links, symlinks), else the same
    resolved path."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs: dict[str, str | os.PathLike | None],
                  folders: tuple[str, ...] = ()) -> None:  # fmt: skip
    """The one output-path rule of every script, applied before any work: each output can be written
    (`check_output_path`), is none of the run's inputs (the data it reads, a protocol, the checkpoint in use ...),
    and no two outputs of the run are the same file.

    Args:
        outputs: flag -> path of what the run writes (None: not written).
        inputs: what the run reads, named as the user knows it (a flag, or e.g. "the dev CM protocol").
        folders: the output flags that name folders.

    Raises:
        ValueError: one line naming the two flags and the path.
    """
    given = {flag: Path(p) for flag, p in outputs.items() if p is not None}
    for flag, path in given.items():
        check_output_path(path, flag, folder=flag in folders)
    for flag, path in given.items():
        for other, other_path in list(given.items())[: list(given).index(flag)]:
            if same_file(path, other_path):
                raise ValueError(f"{flag} {path} is also {other}: two outputs of one run would overwrite each other; "
                                 f"give {flag} another path")  # fmt: skip
        for what, src in inputs.items():
            if src is None:
                continue
            if same_file(path, src):
                raise ValueError(f"{flag} {path} is {what}: the run would overwrite its own input; give {flag} "
                                 "another path")  # fmt: skip


def read_json_object(path: str | os.PathLike, what: str, remedy: str) -> dict | None:
    """The JSON object a run left at `path` (None when there is none); a damaged or foreign file is one ValueError
    naming it, `what` it should be, and the `remedy`."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not {what} ({first_line(e)}); {remedy}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not {what}; {remedy}")
    return obj


def check_same_settings(path: str | os.PathLike, saved: dict, now: dict, remedy: str) -> None:
    """The one rule for resuming into an output: the settings `saved` beside it must equal the run's `now`.

    Raises:
        ValueError: naming the file, each differing setting (then and now) and the `remedy`.
    """
    differ = [k for k in now if saved.get(k) != now[k]]
    if differ:
        changes = ", ".join(f"{k}: {saved.get(k)!r} now {now[k]!r}" for k in differ)
        raise ValueError(f"{path} was written by another run ({changes}); {remedy}")


class RunLock:
    """One process per output folder: `with RunLock(folder, "--out"):` holds `folder/.lock` (its pid and command)
    for the run's life.

    A second run into the same folder stops at once, naming the other process. A lock whose process is gone
    (kill -9, a crash) is stale and taken over with a note. The lock is created with O_EXCL, so two runs started
    together cannot both take it.

    Raises:
        RuntimeError: the folder is in use by a live process (named).
    """

    def __init__(self, folder: str | os.PathLike, flag: str = "--out"):
        self.path, self.flag, self.held = Path(folder) / ".lock", flag, False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = f"{os.getpid()} {' '.join(sys.argv)}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.path.read_text(errors="replace").strip() if self.path.is_file() else ""
                pid = owner.split(" ", 1)[0]
                if pid.isdigit() and pid_alive(int(pid)) and int(pid) != os.getpid():
                    raise RuntimeError(f"{self.flag} {self.path.parent} is in use by process {pid} "
                                       f"({owner.split(' ', 1)[-1][:120]}); wait for it, stop it, or give another "
                                       f"{self.flag}") from None  # fmt: skip
                print(f"note: {self.path} was left by a process that is gone ({owner[:80] or 'empty'}): taken over",
                      file=sys.stderr)  # fmt: skip
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(text)
            self.held = True
            return self
        raise RuntimeError(f"{self.flag} {self.path.parent}: another process took the lock first; try again")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def remove_stale_in(folder: str | os.PathLike) -> list[Path]:
    """The `.NAME.PID.TID.tmp` temporaries that killed `atomic_write`s left in a folder (their process is gone),
    removed; returns them. A resumed run calls it so that its folder holds no leftovers."""
    folder = Path(folder)
    return _remove_dead_writers(folder.glob(".*.tmp")) if folder.is_dir() else []


class Progress:
    """A one-line progress report with rate and ETA, rewritten in place on a terminal (stderr).

    Args:
        total: units expected (0 when unknown: no percentage or ETA).
        unit, scale: counts are shown divided by `scale` in `unit` (bytes with unit="MB", scale=1e6).
        every: seconds between lines (on a terminal the line is rewritten, elsewhere a new line is printed).
    """

    def __init__(
        self, total: int, label: str, unit: str = "files", stream=None, every: float = 1.0, scale: float = 1.0
    ):
        self.total, self.label, self.unit, self.scale, self.done = total, label, unit, scale, 0
        self.stream = stream or sys.stderr
        self.every, self.start = every, time.monotonic()
        self.last, self.finished = -1e9, False
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self, extra: str = "") -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 and self.total else float("inf")
        eta_s = "?" if eta == float("inf") else format_seconds(eta)
        if self.scale == 1:
            count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        else:
            count = (
                f"{self.done / self.scale:,.1f}/{self.total / self.scale:,.1f}"
                if self.total
                else f"{self.done / self.scale:,.1f}"
            )
        pct = f" ({100.0 * self.done / self.total:.0f}%)" if self.total else ""
        return (
            f"{self.label}: {count} {self.unit}{pct} {rate / self.scale:,.1f} {self.unit}/s "
            f"elapsed {format_seconds(elapsed)} ETA {eta_s}{extra}"
        )

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.monotonic()
        done_now = bool(self.total) and self.done >= self.total and not self.finished
        if now - self.last >= self.every or done_now:
            self.last, self.finished = now, self.finished or done_now
            end = "\r" if self.tty else "\n"
            print(self.line(extra), end=end, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream)


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def add_common_args(parser: argparse.ArgumentParser, hidden: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """The flags every script shares: same name, same meaning, same default everywhere. The input flags
    (--frontend, --num-frames, --pad) are `data.add_input_args`, the model's (--precision, --channels-last)
    `model.add_model_args`: each next to the rule it names. `hidden`: flags (dest names) a script takes but that mean
    nothing there -- left out of --help and defaulting to None, so the script can refuse them by name."""
    g = parser.add_argument_group("shared")
    g.add_argument(
        "--data-root",
        default=os.environ.get("ASVSPOOF_ROOT"),
        help="ASVspoof 2019 LA folder, its parent, or the Kaggle copy (default: $ASVSPOOF_ROOT)",
    )
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    g.add_argument("--batch-size", type=int, default=64, help="items per batch (per process under torchrun)")
    g.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader worker processes (default: 0 on the CPU, min(16, cores) with a GPU: "
                        "cli.default_num_workers)")  # fmt: skip
    g.add_argument("--seed", type=int, default=1, help="random seed")
    g.add_argument("--skip-bad", action="store_true", help="skip missing/unreadable audio (counted) instead of failing")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    for action in g._group_actions:
        if action.dest in hidden:
            action.help, action.default = argparse.SUPPRESS, None
    return parser


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available on this machine (try --device cpu)")
    return device


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `except BaseException` / `finally` runs (evaluate.py keeps
    its `.partial`, atomic writes remove their temporaries), as Ctrl-C does."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def default_num_workers(flag: int | None, device: torch.device) -> int:
    """The --num-workers rule: the flag when given; else 0 when the model runs on the CPU, where a worker process
    competes with the model's OpenMP threads for the same cores (the tiny recipe on 2 cores: 90 training files/s
    in-process, 14 with 2 workers, whose decoding the threads' spin-waiting starves); with an accelerator,
    min(16, cores), enough to decode ~5,000 LA files/s.

    Raises:
        ValueError: a negative flag.
    """
    if flag is not None:
        if flag < 0:
            raise ValueError(f"--num-workers must be 0 or more, got {flag}")
        return flag
    return 0 if torch.device(device).type == "cpu" else min(16, os.cpu_count() or 1)


def is_out_of_memory(e: BaseException) -> bool:
    """Whether an exception is an allocation failure: MemoryError, torch.OutOfMemoryError (CUDA, MPS), or the plain
    RuntimeError torch's CPU allocator raises. The CPU case has no type of its own, so it is recognised by the
    allocator's fixed text ("DefaultCPUAllocator: can't allocate memory") -- the one place the project reads an
    exception's message, and only because torch gives nothing else to go on."""
    if isinstance(e, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a script's main(); a user error ends as one line on stderr and exit status 1 (--debug: traceback).

    Ctrl-C exits 130, SIGTERM 143, both after the script's own clean-up ran.
    """
    import signal

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        sys.exit(143)
    except (FileNotFoundError, ValueError, RuntimeError, OSError, MemoryError) as e:
        if debug:
            traceback.print_exc()
        text = str(e) or type(e).__name__
        if is_out_of_memory(e):
            first = text.strip().splitlines()[0][:160]
            text = (f"out of memory ({first}); expected sizes this machine can hold: lower --batch-size or "
                    "--num-frames (or check the checkpoint's sizes)")  # fmt: skip
        print(f"error: {text}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


def first_line(e: BaseException) -> str:
    """The first line of an exception's text (torch's load_state_dict lists every key on its own line), or its type."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
