"""evaluate.py -- score a checkpoint on an ASVspoof 2019 LA split, or on any audio files.

    python evaluate.py --ckpt runs/stc/best.pt --data-root ROOT [--split eval] [--out scores.txt] [--json]
    python evaluate.py --ckpt runs/stc/best.pt --data-root DIR [--corpus la21|df21|itw|asv5|kaldi|folders|csv]
                       [--subset S] [--out scores.txt] [--asv5-out scores.tsv] [--calibrated | --raw]
    python evaluate.py --ckpt OLD.pt --data-root LA --split dev --calibrate     (store a calibration in OLD.pt)
    python evaluate.py --ckpt runs/stc/best.pt --files a.flac b.wav ... [--p-spoof 0.05 --c-miss 1 --c-fa 10] [--json]

Split mode scores every line of the split's CM protocol into an ASVspoof score file `UTT SYSTEM KEY SCORE`
(score = logit_bona - logit_spoof, the bona fide log-odds: higher = more bona fide), checks the file line by line
against the protocol (as aasist's `produce_evaluation_file`), then prints the EER, the min t-DCF (with the
organisers' ASV scores found under --data-root) and the per-attack table, and writes the DET plot.

Nothing computed is lost: scores are saved every --save-every batches to `<out>.partial` (atomically, next to a
`<out>.partial.json` that records what produced them); a run killed half-way and started again with the same
--out scores only what is missing. The final file is written atomically and the partial files are removed.

Fast path: DataLoader workers decode and crop/pad waveforms; the front-end runs per batch on the device under
torch.inference_mode, in the precision and memory format measured fastest on this machine (`tune.py`; printed at
start, cached). Protocol order is kept.

The model, the front-end, the input length and the padding come from the checkpoint: evaluation crops from the
start and pads short files as training did (the papers' fixed length). --full-length instead scores the whole
utterance as the mean logits of consecutive windows of that length (the LCNN's FC fixes its input size).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import metrics
from cli import (
    ArgumentParser,
    Progress,
    add_common_args,
    atomic_write,
    check_output_path,
    check_outputs,
    check_same_settings,
    default_num_workers,
    read_json_object,
    resolve_device,
    run_cli,
)
from corpora import (
    SPLITS,
    Corpus,
    LALayout,
    ProtocolEntry,
    add_corpus_args,
    detect_corpus,
    find_la_root,
    read_corpus,
)
from data import (
    AUDIO_ERRORS,
    ASVspoof2019LA,
    AudioDataset,
    BadAudio,
    add_input_args,
    audio_info,
    collate,
    count_bad,
    fix_length,
    load_audio,
    make_frontend,
)
from metrics import ASVSPOOF5_COSTS, Calibration, DetectionCosts
from model import (
    Checkpoint,
    add_model_args,
    bonafide_score,
    check_input_flags,
    configure_backend,
    load_checkpoint,
    read_checkpoint,
    trained_data_root,
    use_bf16,
    waves_to_logits,
)
from tune import BUDGET_S, Settings, choose_settings

# ----------------------------------------------------------------------------- the scorer: checkpoint -> logits


@dataclass
class Scorer:
    """A checkpoint ready to score waveforms on a device, through `model.waves_to_logits` (the one path).

    Attributes:
        ckpt: the rebuilt checkpoint (`model.load_checkpoint`): model in eval mode and front-end, on `device`.
        device: where features and logits are computed.
        pad: how short files are padded ("repeat" or "zeros"), as in training unless overridden.
        bf16: run the model under bf16 autocast (`tune.choose_settings`).
        channels_last: the model's memory format (`tune.choose_settings`).
        settings: how those two were chosen (flags, cache or measurement), None when given directly.
        calibration: the checkpoint's score -> LLR map (`metrics.Calibration`), None for a checkpoint without one
            (trained before issue 16, or whose dev scores could not be calibrated).
    """

    ckpt: Checkpoint
    device: torch.device
    pad: str
    bf16: bool = False
    channels_last: bool = True
    settings: Settings | None = None
    calibration: Calibration | None = None

    @property
    def model(self) -> nn.Module:
        return self.ckpt.model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self.ckpt.model = model

    @property
    def frontend(self) -> nn.Module:
        return self.ckpt.frontend

    @property
    def num_samples(self) -> int:
        return self.ckpt.num_samples

    @property
    def path(self) -> Path:
        return self.ckpt.path

    @torch.inference_mode()
    def logits(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, num_samples) float waveforms on any device -> (B, 2) float32 logits [spoof, bona fide] on the CPU."""
        return waves_to_logits(self.model, self.frontend, waves, self.bf16, self.channels_last).cpu()

    def scores(self, waves: torch.Tensor) -> list[float]:
        """(B, num_samples) waveforms -> B bona fide scores (`model.bonafide_score`)."""
        return bonafide_score(self.logits(waves)).tolist()

    def logits_full(self, wave: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Score one whole utterance: the mean logits of consecutive `num_samples` windows covering it.

        A file shorter than one window is padded as in training; the last window is aligned to the file's end.
        Windows go through the model `batch_size` at a time.

        Args:
            wave: (N,) waveform.
        Returns:
            (2,) float32 logits [spoof, bona fide].
        """
        n, w = wave.shape[-1], self.num_samples
        if n <= w:
            return self.logits(fix_length(wave, w, self.pad).unsqueeze(0))[0]
        starts = window_starts(n, w)
        total = torch.zeros(2)
        for k in range(0, len(starts), max(1, batch_size)):
            total += self.logits(torch.stack([wave[s : s + w] for s in starts[k : k + batch_size]])).sum(0)
        return total / len(starts)

    def logits_file(self, path: str | os.PathLike, batch_size: int = 8) -> tuple[torch.Tensor, float]:
        """`logits_full` of an audio file read a batch of windows at a time, so memory stays flat in the file's
        length (a 16 kHz file; a file at another rate is decoded whole and resampled first).

        Returns:
            ((2,) float32 logits, the file's duration in seconds).
        Raises:
            FileNotFoundError / RuntimeError / ValueError naming the file (`data.load_audio`).
        """
        frames, sr = audio_info(path)
        w = self.num_samples
        if sr != self.frontend.sample_rate or frames <= w:
            wave = load_audio(path)
            return self.logits_full(wave, batch_size), wave.shape[0] / self.frontend.sample_rate
        starts = window_starts(frames, w)
        total = torch.zeros(2)
        for k in range(0, len(starts), max(1, batch_size)):
            # the first window's read decodes and checks the whole file once (in blocks); the others seek to theirs
            waves = [load_audio(path, num_samples=w, offset=s, verify=(k + j == 0))
                     for j, s in enumerate(starts[k : k + batch_size])]  # fmt: skip
            total += self.logits(torch.stack(waves)).sum(0)
        return total / len(starts), frames / sr


def window_starts(n: int, w: int) -> list[int]:
    """Starts of consecutive windows of w samples covering n > w samples, the last one aligned to the end."""
    starts = list(range(0, n - w + 1, w))
    if starts[-1] + w < n:
        starts.append(n - w)
    return starts


def load_scorer(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    pad: str | None = None,
    frontend: str | None = None,
    num_frames: int | None = None,
    channels_last: bool | None = None,
    batch_size: int = 8,
    budget_s: float = BUDGET_S,
    job_steps: int | None = None,
) -> Scorer:
    """Load a train.py checkpoint as a `Scorer`; the front-end, input length and padding come from it.

    Args:
        path: checkpoint file (a plain dict: "model", "model_args", "args", ...).
        device: torch device or its name.
        precision: "auto" (measured: bf16 where native and faster, `tune.choose_settings`), "fp32" or "bf16".
        pad: override the checkpoint's padding of short files ("repeat" or "zeros").
        frontend, num_frames: must agree with the checkpoint when given (the model's input size is fixed).
        channels_last: memory format; None = measured with the precision.
        batch_size, budget_s, job_steps: the batch the measurement runs at, its time budget and the batches the job
            will take, when known (`tune.choose_settings`).

    Raises:
        FileNotFoundError: no such file. ValueError: not a readable train.py checkpoint, or flags that contradict it.
    """
    device = torch.device(device)
    use_bf16(precision, device)  # a bad precision fails before the checkpoint is read
    try:
        ckpt = load_checkpoint(path, "cpu", make_frontend)
    except ValueError as e:
        raise ValueError(f"--ckpt {e}") from None
    check_input_flags(ckpt, frontend, num_frames)
    pad = pad or ckpt.pad
    if pad not in ("repeat", "zeros"):
        raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")
    ckpt.frontend = ckpt.frontend.to(device)
    configure_backend(device)
    settings = choose_settings(ckpt.model, ckpt.frontend, device, (batch_size, ckpt.num_samples), "score", precision,
                               channels_last, budget_s, job_steps)  # fmt: skip
    print(settings.describe(), file=sys.stderr, flush=True)
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    ckpt.model = ckpt.model.to(device, memory_format=fmt)
    return Scorer(
        ckpt, device, pad, settings.bf16, settings.channels_last, settings, checkpoint_calibration(ckpt.raw, ckpt.path)
    )


def checkpoint_calibration(raw: dict, path: Path | None) -> Calibration | None:
    """A checkpoint's stored calibration (`train.py` since issue 16, or `evaluate.py --calibrate`), or None.

    Raises:
        ValueError: a stored calibration that is not a valid `Calibration.to_dict()`, naming the file.
    """
    stored = raw.get("calibration")
    if stored is None:
        return None
    try:
        if not isinstance(stored, dict):
            raise ValueError(f"it is a {type(stored).__name__}, expected a dict")
        return Calibration.from_dict(stored)
    except ValueError as e:
        raise ValueError(f"--ckpt {path}: stored calibration is damaged ({e}); recalibrate it with "
                         "evaluate.py --ckpt CK --data-root LA --split dev --calibrate") from None  # fmt: skip


# ----------------------------------------------------------------------------- score files: partial, resume, check


def file_digest(path: Path) -> str:
    """sha256 of a file, so a resumed run can tell that the checkpoint is the same one."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: dict) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1)


def partial_paths(out: Path) -> tuple[Path, Path]:
    """(`<out>.partial`, `<out>.partial.json`): scores so far and what produced them."""
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")


def read_partial(out: Path, run_info: dict, by_id: dict[str, ProtocolEntry]) -> dict[str, float]:
    """Scores saved by an earlier, interrupted run with the same --out (empty when there are none).

    Raises:
        ValueError: the partial scores came from another checkpoint/split/setting, or hold a line that is not in
            the protocol (with its system and key): delete them or choose another --out.
    """
    partial, meta_path = partial_paths(out)
    if not partial.is_file():
        return {}
    remedy = f"delete it and {partial.name} to start over, or choose another --out"
    meta = read_json_object(meta_path, "the JSON object an interrupted run writes", remedy) or {}
    check_same_settings(partial, meta, run_info, remedy)
    saved = metrics.read_score_file(partial)
    for i, (utt, system, key) in enumerate(zip(saved.utt_id, saved.system, saved.key), 1):
        e = by_id.get(str(utt))
        if e is None or (e.system, e.key) != (system, key):
            raise ValueError(
                f"{partial.name} line {i}: {utt} {system} {key} is not a line of the protocol; "
                "delete the partial file to start over"
            )
    return dict(zip(saved.utt_id.tolist(), saved.score.tolist()))


def write_scores(path: Path, entries: Sequence[ProtocolEntry], scores: dict[str, float]) -> Path:
    """Write the scored entries in protocol order, atomically (`metrics.write_score_file`)."""
    done = [e for e in entries if e.utt_id in scores]
    return metrics.write_score_file(
        path, [e.utt_id for e in done], [e.system for e in done], [e.key for e in done],
        np.array([scores[e.utt_id] for e in done], dtype=np.float64),
    )  # fmt: skip


def calibrated(scores: dict[str, float], calibration: Calibration | None) -> dict[str, float]:
    """{utt id: LLR a * score + b} with a calibration, the raw scores without one."""
    if calibration is None:
        return scores
    return dict(zip(scores, calibration.apply(list(scores.values())).tolist()))


def check_score_file(path: Path, expected: Sequence[ProtocolEntry]) -> metrics.ScoreFile:
    """Read a score file back and check it against the trial list: every trial once with its key and system
    (`metrics.check_trials`), then line by line in protocol order.

    Raises:
        ValueError: counts and first utterances of what is missing, extra or contradicts the list; or the first line
            out of protocol order.
    """
    scores = metrics.read_score_file(path)
    metrics.check_trials(scores, expected, "the trial list")
    for i, (e, utt, system, key) in enumerate(zip(expected, scores.utt_id, scores.system, scores.key), 1):
        if (e.utt_id, e.system, e.key) != (utt, system, key):
            raise ValueError(
                f"{path.name} line {i}: expected '{e.utt_id} {e.system} {e.key}' (protocol order), "
                f"got '{utt} {system} {key}'"
            )
    return scores


# ----------------------------------------------------------------------------- scoring a split


def collate_first_whole(batch: list) -> dict:
    """collate_fn of --full-length (batch size 1: whole waveforms differ in length). A module-level function, not a
    lambda, so that DataLoader workers started by spawn (macOS, Windows) can pickle it."""
    return collate_whole(batch[0])


class _WholeFiles(Dataset):
    """Items of an ASVspoof2019LA as whole waveforms (for --full-length): (wave (N,), utt_id), or `BadAudio`."""

    def __init__(self, ds: AudioDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        e = self.ds.entries[i]
        try:
            return self.ds.waveform(i), e.utt_id
        except AUDIO_ERRORS as err:
            return BadAudio.of(e.utt_id, self.ds.path(i), err)


class NonFiniteScoreError(RuntimeError):
    """The model gave a NaN / inf score on finite audio."""


def check_finite_scores(utt_ids: Sequence[str], values: Sequence[float]) -> None:
    """A NaN / inf score never reaches a score file or a verdict: the audio was checked finite, so it comes from the
    model (damaged or diverged weights). RuntimeError naming the first utterance."""
    bad = [u for u, v in zip(utt_ids, values) if not np.isfinite(v)]
    if bad:
        raise NonFiniteScoreError(f"the model gave {len(bad)} non-finite score(s) (first: {bad[0]}) on finite audio: the "
                           "checkpoint's weights are damaged or the run diverged; score with another checkpoint")  # fmt: skip


def score_dataset(
    scorer: Scorer,
    ds: AudioDataset,
    scores: dict[str, float],
    batch_size: int,
    num_workers: int,
    save_every: int,
    save: Callable[[], None],
    skip_bad: bool = False,
    full_length: bool = False,
    progress: str | None = None,
    multiprocessing_context: str | None = None,
) -> list[BadAudio]:
    """Score the items of a waveform dataset (frontend=None) in order into `scores` {utt_id: score}.

    DataLoader workers decode and crop/pad; `scorer` makes features and logits per batch on its device. `save()`
    runs every `save_every` batches. Unusable files are `data.BadAudio` items under the one policy
    (`data.count_bad`): skipped and returned with `skip_bad`, else the first stops the run naming the file.
    `progress` labels the progress line (None: no progress line). `multiprocessing_context` ("spawn", "fork") is
    the workers' start method (None: the platform's; spawn is macOS's and Windows', so everything a worker gets --
    dataset, collate_fn -- must pickle).

    Returns:
        The files skipped as unusable.
    """
    loader = DataLoader(
        _WholeFiles(ds) if full_length else ds,
        batch_size=1 if full_length else batch_size,
        shuffle=False,  # protocol order
        num_workers=num_workers,
        collate_fn=collate_first_whole if full_length else collate,
        pin_memory=scorer.device.type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )
    bar = Progress(len(ds), progress, unit="files") if progress else None
    skipped: list[BadAudio] = []
    try:
        for n_batch, batch in enumerate(loader, 1):
            if batch["x"] is not None:
                if full_length:
                    values = [float(bonafide_score(scorer.logits_full(batch["x"], batch_size)))]
                else:
                    values = scorer.scores(batch["x"])
                check_finite_scores(batch["utt_id"], values)
                scores.update(zip(batch["utt_id"], values))
            count_bad(batch["bad"], skip_bad)  # after the batch's good files are scored: they are kept
            skipped += batch["bad"]
            if bar:
                bar.update(len(batch.get("utt_id", ())) + batch["n_bad"])
            if n_batch % save_every == 0:
                save()
    finally:
        if bar:
            bar.close()
    return skipped


def collate_whole(item) -> dict:
    """One --full-length item as a batch dict of `collate`'s keys: x is the whole (N,) waveform."""
    if isinstance(item, BadAudio):
        return {"x": None, "bad": [item], "n_bad": 1}
    wave, utt = item
    return {"x": wave, "utt_id": [utt], "bad": [], "n_bad": 0}


@dataclass
class SplitResult:
    """What `score_split` did: the final score file and its counts."""

    path: Path
    scores: metrics.ScoreFile
    n_scored: int  # scored in this run
    n_resumed: int  # taken from an earlier run's partial file
    skipped: list[str]  # audio missing or unreadable (only with skip_bad)
    seconds: float

    @property
    def files_per_s(self) -> float:
        return self.n_scored / max(self.seconds, 1e-9)


def score_split(
    scorer: Scorer,
    data_root: str | os.PathLike | LALayout,
    split: str,
    out: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int = 4,
    save_every: int = 100,
    skip_bad: bool = False,
    full_length: bool = False,
    progress: bool = True,
    calibration: Calibration | None = None,
) -> SplitResult:
    """Score every protocol line of an ASVspoof 2019 LA split into `out`, resuming from `<out>.partial` when present.

    Args:
        scorer: from `load_scorer`.
        data_root: the LA tree (anything `find_la_root` accepts) or an `LALayout`.
        split: "train", "dev" or "eval".
        out: score file to write (`UTT SYSTEM KEY SCORE`, protocol order).
        batch_size: files per batch (ignored with `full_length`: one file at a time).
        num_workers: DataLoader worker processes that decode audio.
        save_every: save the scores so far to `<out>.partial` every this many batches.
        skip_bad: leave out missing/unreadable files (listed in the result) instead of failing.
        full_length: score whole utterances (see `Scorer.logits_full`).
        progress: print a progress line with files/s on stderr.
        calibration: write LLRs (a * score + b) instead of raw scores; the `.partial` file always holds raw ones.

    Returns:
        SplitResult; its score file has been checked line by line against the protocol.

    Raises:
        FileNotFoundError / RuntimeError: missing or unreadable audio (without skip_bad), naming the file.
        ValueError: a partial file from another run, or a score file that does not match the protocol.
    """
    layout = data_root if isinstance(data_root, LALayout) else find_la_root(data_root)
    out = check_output_path(out, "--out")  # before any scoring: a bad path must not cost a whole split

    def dataset(todo: list[ProtocolEntry]) -> AudioDataset:
        return ASVspoof2019LA(layout, split, scorer.num_samples, frontend=None, pad=scorer.pad, skip_bad=skip_bad,
                              entries=todo)  # fmt: skip

    return score_trials(scorer, layout.protocol(split), layout.protocol_path(split), dataset, out, split, batch_size,
                        num_workers, save_every, skip_bad, full_length, progress, calibration)  # fmt: skip


def score_corpus(
    scorer: Scorer,
    corpus: Corpus,
    out: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int = 4,
    save_every: int = 100,
    skip_bad: bool = False,
    full_length: bool = False,
    progress: bool = True,
    calibration: Calibration | None = None,
) -> SplitResult:
    """`score_split` for any corpus (`corpora.read_corpus`): the same resumable, checked, atomic scoring, one line a
    trial in key-file order, the corpus's attack (or '-', or 'spoof' where it names none) as the system column."""
    out = check_output_path(out, "--out")

    def dataset(todo: list[ProtocolEntry]) -> AudioDataset:
        return AudioDataset(todo, scorer.num_samples, frontend=None, pad=scorer.pad, skip_bad=skip_bad,
                            name=corpus.subset or corpus.name, source=corpus.key_file.name)  # fmt: skip

    return score_trials(scorer, corpus.entries, corpus.key_file, dataset, out, corpus.subset or corpus.name,
                        batch_size, num_workers, save_every, skip_bad, full_length, progress, calibration)  # fmt: skip


def score_trials(
    scorer: Scorer,
    entries: list[ProtocolEntry],
    key_file: Path,
    dataset: Callable[[list[ProtocolEntry]], AudioDataset],
    out: Path,
    name: str,
    batch_size: int,
    num_workers: int,
    save_every: int,
    skip_bad: bool,
    full_length: bool,
    progress: bool,
    calibration: Calibration | None,
) -> SplitResult:
    """The scoring machinery behind `score_split` and `score_corpus`: resume from `<out>.partial` (raw scores, with
    the run's identity: checkpoint, key file, input), score what is missing through `dataset(todo)`, write `out`
    atomically (LLRs with `calibration`) and check it line by line against `entries`."""
    by_id = {e.utt_id: e for e in entries}
    run_info = {
        "checkpoint_sha256": file_digest(scorer.path) if scorer.path else None,
        "protocol_sha256": file_digest(key_file),
        "num_samples": scorer.num_samples, "pad": scorer.pad, "full_length": full_length,
    }  # fmt: skip
    scores = read_partial(out, run_info, by_id)
    n_resumed = len(scores)
    todo = [e for e in entries if e.utt_id not in scores]
    if n_resumed and progress:
        print(f"resuming {out}: {n_resumed:,} of {len(entries):,} already scored", file=sys.stderr)
    partial, meta_path = partial_paths(out)

    def save_partial() -> None:
        if len(scores) > n_resumed:  # else the partial file on disk (if any) already holds everything
            write_json_atomic(meta_path, run_info)
            write_scores(partial, entries, scores)

    start = time.monotonic()
    skipped: list[str] = []
    try:
        if todo:
            ds = dataset(todo)
            skipped += list(dict.fromkeys(p.utt_id for p in ds.problems))  # missing audio (skip_bad)
            bad = score_dataset(scorer, ds, scores, batch_size, num_workers, save_every, save_partial, skip_bad,
                                full_length, f"score {name}" if progress else None)  # fmt: skip
            skipped += [b.utt_id for b in bad]  # unusable audio (skip_bad)
        seconds = time.monotonic() - start
        expected = [e for e in entries if e.utt_id in scores]
        if not expected:
            raise RuntimeError(f"no {name} file could be scored ({len(skipped):,} missing or unusable)")
        write_scores(out, entries, calibrated(scores, calibration))
        checked = check_score_file(out, expected)
    except BaseException:
        save_partial()  # Ctrl-C, SIGTERM, a bad file or a failed write: what was scored is kept for the next run
        raise
    partial.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)
    return SplitResult(out, checked, len(scores) - n_resumed, n_resumed, skipped, seconds)


# ----------------------------------------------------------------------------- metrics of a split


def report_split(
    scores: metrics.ScoreFile,
    data_root: str | os.PathLike | LALayout | None,
    split: str,
    det_path: Path | None,
    asv_scores: str | os.PathLike | None = None,
) -> dict:
    """EER, min t-DCF and per-attack EER of a score file, and its DET plot.

    Args:
        scores: the checked score file.
        data_root: where to look for the organisers' ASV scores of `split` (`metrics.find_asv_scores`).
        split: "dev" or "eval" have ASV scores; for "train" the t-DCF is skipped.
        det_path: PNG to write, or None.
        asv_scores: an explicit ASV score file (wins over `data_root`).

    Returns:
        `metrics.evaluate_scores`' dict plus "asv_scores" (path or None), "asv_note" (why there is no t-DCF,
        or None) and "det" (path or None).
    """
    asv, note = None, None
    try:
        if asv_scores is None:
            root = data_root.root if isinstance(data_root, LALayout) else data_root
            if root is None:
                raise FileNotFoundError("no --data-root to look for the ASV scores in")
            asv_scores = metrics.find_asv_scores(root, split)
        asv = metrics.read_asv_scores(asv_scores)
    except (FileNotFoundError, ValueError) as e:
        note = f"min t-DCF skipped: {e}"
        asv_scores = None
    result = metrics.evaluate_scores(scores, asv)
    if det_path is not None:
        name = scores.path.stem if scores.path else split
        metrics.plot_det({name: (scores.bonafide_scores, scores.spoof_scores)}, det_path)
    result.update(asv_scores=str(asv_scores) if asv_scores else None, asv_note=note,
                  det=str(det_path) if det_path else None)  # fmt: skip
    return result


# ----------------------------------------------------------------------------- scoring files


@dataclass(frozen=True)
class Decision:
    """How `--files` turns a score into a verdict, named in its output.

    With a calibration: the LLR a * score + b, P(bona fide) at the stated bona fide prior 1 - p_spoof, and the verdict
    at the Bayes threshold -ln(beta) of the costs (`metrics.bayes_threshold`; ASVspoof 5's by default). Without one,
    the raw score (logit_bona - logit_spoof) against 0, which nothing calibrated: no LLR and no probability.
    """

    calibration: Calibration | None
    costs: DetectionCosts = ASVSPOOF5_COSTS

    @property
    def threshold(self) -> float:
        return metrics.bayes_threshold(self.costs) + 0.0 if self.calibration is not None else 0.0  # + 0.0: no "-0"

    def rule(self) -> str:
        c = self.costs
        if self.calibration is None:
            return ("UNCALIBRATED: bonafide when the raw score (logit_bona - logit_spoof) >= 0; the checkpoint holds no "
                    "calibration, so the score is no likelihood ratio and no probability is given (calibrate it: "
                    "evaluate.py --ckpt CK --data-root LA --split dev --calibrate)")  # fmt: skip
        return (f"llr = {self.calibration.a:.6g} * score {self.calibration.b:+.6g} (the checkpoint's calibration); "
                f"p_bonafide = P(bona fide | audio) at prior P(bona fide) = {1 - c.p_spoof:g}; bonafide when llr >= "
                f"{self.threshold:.4f}, the Bayes threshold of p_spoof {c.p_spoof:g}, c_miss {c.c_miss:g}, c_fa "
                f"{c.c_fa:g}")  # fmt: skip

    def apply(self, row: dict) -> None:
        """Add "llr", "p_bonafide" and "verdict" to a row holding "score"."""
        if self.calibration is None:
            row.update(llr=None, p_bonafide=None, verdict="bonafide" if row["score"] >= 0 else "spoof")
            return
        llr = float(self.calibration.apply([row["score"]])[0])
        p = float(metrics.llr_to_posterior([llr], 1 - self.costs.p_spoof)[0])
        row.update(llr=llr, p_bonafide=p, verdict="bonafide" if llr >= self.threshold else "spoof")

    def to_json(self) -> dict:
        c = self.costs
        return {"calibration": self.calibration.to_dict() if self.calibration else None, "calibrated":
                self.calibration is not None, "p_spoof": c.p_spoof, "c_miss": c.c_miss, "c_fa": c.c_fa,
                "prior_bonafide": 1 - c.p_spoof, "threshold": self.threshold, "rule": self.rule()}  # fmt: skip


def score_files(
    scorer: Scorer,
    paths: Sequence[str | os.PathLike],
    decision: Decision | None = None,
    batch_size: int = 64,
    skip_bad: bool = False,
    full_length: bool = False,
    progress: bool = False,
) -> list[dict]:
    """Raw score, LLR, bona fide probability and verdict of each audio file soundfile reads (resampled to 16 kHz,
    downmixed), as `decision` says (default: the scorer's calibration and the ASVspoof 5 costs).

    Only the window the model scores is read from a 16 kHz file (all windows, a batch at a time, with
    `full_length`), so memory does not grow with a file's length. Unusable files follow the one policy
    (`data.count_bad`): an "error" row with `skip_bad`, else one error naming the file.

    Args:
        scorer: from `load_scorer`.
        paths: audio files, any rate and channel count.
        decision: how a score becomes a verdict (`Decision`).
        batch_size: files (or, with `full_length`, windows of one file) scored together.
        skip_bad: an unusable file gets an "error" entry instead of stopping everything.
        full_length: score whole files (see `Scorer.logits_file`) instead of the training crop.
        progress: a progress line with rate and ETA on stderr (every 5 s), then the tally "N scored, M skipped".

    Returns:
        One dict per file, in order: {"file", "duration_s", "score", "llr", "p_bonafide", "verdict"} (llr and
        p_bonafide None without a calibration), or {"file", "error"} for an unusable file when skip_bad.

    Raises:
        BadAudioError naming the file (without skip_bad); RuntimeError for a non-finite score.
    """
    decision = decision or Decision(scorer.calibration)
    results: list[dict] = []
    pending: list[tuple[dict, torch.Tensor]] = []
    bar = Progress(len(paths), "score files", every=5.0) if progress else None

    def finish(rows: list[dict], logits: torch.Tensor) -> None:
        values = bonafide_score(logits).tolist()
        check_finite_scores([r["file"] for r in rows], values)
        for row, s in zip(rows, values):
            row["score"] = s
            decision.apply(row)

    def flush() -> None:
        if pending:
            waves = torch.stack([fix_length(w, scorer.num_samples, scorer.pad) for _, w in pending])
            finish([row for row, _ in pending], scorer.logits(waves))
            pending.clear()

    for path in paths:
        row = {"file": str(path)}
        results.append(row)
        try:
            if full_length:
                logits, row["duration_s"] = scorer.logits_file(path, batch_size)
                finish([row], logits.unsqueeze(0))
                continue
            frames, sr = audio_info(path)
            wave = load_audio(path, num_samples=scorer.num_samples)  # (<= num_samples,) mono, 16 kHz
        except NonFiniteScoreError:
            raise
        except AUDIO_ERRORS as e:
            bad = BadAudio.of(Path(path).stem, path, e)
            count_bad([bad], skip_bad)
            row["error"] = bad.problem
            continue
        row["duration_s"] = frames / sr
        pending.append((row, wave))
        if len(pending) >= batch_size:
            flush()
            if bar:
                bar.update(len(results) - bar.done)
    flush()
    if bar:
        bar.update(len(results) - bar.done)
        bar.close()
        bad = [r for r in results if "error" in r]
        first = f": first {bad[0]['file']}: {bad[0]['error']}" if bad else ""
        print(f"{len(results) - len(bad):,} scored, {len(bad):,} skipped{first}", file=sys.stderr)
    return results


def format_files_table(rows: list[dict], decision: Decision) -> str:
    """A plain-text table of `score_files`' rows, under a line saying how the verdict was reached."""
    width = max([len("file")] + [len(r["file"]) for r in rows])
    lines = [f"verdict: {decision.rule()}"]
    lines.append(f"{'file':<{width}}  duration      score        llr  p(bonafide)  verdict")
    for r in rows:
        if "error" in r:
            lines.append(f"{r['file']:<{width}}  error: {r['error']}")
            continue
        llr = f"{r['llr']:9.4f}" if r["llr"] is not None else f"{'-':>9}"
        p = f"{r['p_bonafide']:11.4f}" if r["p_bonafide"] is not None else f"{'-':>11}"
        lines.append(f"{r['file']:<{width}}  {r['duration_s']:7.2f}s  {r['score']:9.4f}  {llr}  {p}  {r['verdict']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- calibrating a checkpoint


def calibrate_checkpoint(ckpt_path: Path, scores: metrics.ScoreFile) -> tuple[Calibration, dict]:
    """Fit llr = a * score + b on a scored development set (raw scores) and store it in the checkpoint as
    "calibration" (a plain dict: `torch.load(weights_only=True)` still loads it), atomically -- the one-command path
    for a checkpoint trained before train.py stored one.

    Returns:
        (the calibration, `metrics.calibration_effect` on those scores).
    Raises:
        ValueError: scores `metrics.fit_calibration` refuses (a class absent, a CM at chance).
    """
    calibration = metrics.fit_calibration(scores.bonafide_scores, scores.spoof_scores)
    effect = metrics.calibration_effect(calibration, scores.bonafide_scores, scores.spoof_scores)
    raw = read_checkpoint(ckpt_path)
    raw["calibration"] = calibration.to_dict()
    with atomic_write(ckpt_path, "wb") as f:
        torch.save(raw, f)
    return calibration, effect


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, type=Path, help="train.py checkpoint (e.g. runs/stc/best.pt)")
    parser.add_argument(
        "--files",
        nargs="+",
        type=Path,
        metavar="AUDIO",
        help="score these audio files (any rate/channels soundfile reads) instead of a split",
    )
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="ASVspoof 2019 LA split to score (default: eval; dev with --calibrate)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="score file (default: scores_<split>.txt next to the checkpoint)")
    parser.add_argument("--asv5-out", type=Path, metavar="SCORES.tsv",
                        help="also write the ASVspoof 5 pair: SCORES.tsv (filename<TAB>cm-score) and SCORES_keys.tsv "
                        "(filename<TAB>cm-label), for the organisers' evaluation.py")  # fmt: skip
    parser.add_argument("--det", type=Path, metavar="FILE.png", help="DET plot (default: <out stem>_det.png)")
    parser.add_argument("--asv-scores", type=Path, help="organisers' ASV score file (default: found under --data-root)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report/table")
    kind = parser.add_argument_group("scores: LLRs or raw").add_mutually_exclusive_group()
    kind.add_argument("--calibrated", action="store_true",
                      help="write LLRs (a * score + b from the checkpoint's calibration); an error without one. "
                      "Default: LLRs when the checkpoint holds a calibration, raw scores otherwise (said on stderr)")  # fmt: skip
    kind.add_argument("--raw", action="store_true", help="write raw scores (logit_bona - logit_spoof)")
    kind.add_argument("--calibrate", action="store_true",
                      help="score the set (default --split dev) raw, fit llr = a * score + b on it and store it in "
                      "--ckpt (atomically): for checkpoints trained before train.py stored one")  # fmt: skip
    costs = parser.add_argument_group("--files: the verdict's prior and costs (ASVspoof 5's by default)")
    costs.add_argument("--p-spoof", type=float, default=ASVSPOOF5_COSTS.p_spoof, help="prior of a spoof (default 0.05)")
    costs.add_argument("--c-miss", type=float, default=ASVSPOOF5_COSTS.c_miss,
                       help="cost of rejecting bona fide (default 1)")  # fmt: skip
    costs.add_argument(
        "--c-fa", type=float, default=ASVSPOOF5_COSTS.c_fa, help="cost of accepting a spoof (default 10)"
    )
    parser.add_argument(
        "--full-length",
        action="store_true",
        help="score whole utterances (mean logits of windows) instead of the training crop",
    )
    parser.add_argument("--save-every", type=int, default=100, help="save partial scores every N batches")
    add_common_args(parser)
    add_corpus_args(parser)
    add_input_args(parser)
    add_model_args(parser)
    # None = "as the checkpoint says": the model's input size is fixed by its training flags.
    parser.set_defaults(frontend=None, num_frames=None, pad=None)
    # Scoring batch: 64 on CUDA; 8 elsewhere, because an fp32 STC item (863 x 600) peaks at ~0.3 GB of activations
    # on a CPU (batch 64 would ask for ~20 GB) and larger CPU batches are no faster.
    parser.set_defaults(batch_size=None)
    return parser


def choose_calibration(scorer: Scorer, args: argparse.Namespace) -> Calibration | None:
    """The --calibrated / --raw rule: LLRs when asked or when the checkpoint holds a calibration; said on stderr."""
    if args.raw or args.calibrate:
        return None
    if scorer.calibration is None:
        if args.calibrated:
            raise ValueError(f"--calibrated: {args.ckpt} holds no calibration; fit one with evaluate.py --ckpt "
                             f"{args.ckpt} --data-root LA --split dev --calibrate")  # fmt: skip
        print(f"scores are RAW (logit_bona - logit_spoof): {args.ckpt} holds no calibration, so actDCF and Cllr "
              "measure the raw scale; --calibrate on a dev set stores one", file=sys.stderr)  # fmt: skip
        return None
    print(f"scores are LLRs ({'--calibrated' if args.calibrated else 'the default: the checkpoint holds a calibration'}"
          f"; --raw for raw scores): {metrics.describe_calibration(scorer.calibration)}", file=sys.stderr)  # fmt: skip
    return scorer.calibration


def plan_set(args: argparse.Namespace) -> tuple[str, str, Path, LALayout | None, Corpus | None]:
    """What a set run scores, decided before any model is loaded: (corpus name, label, key file, LA layout or the
    corpus). --data-root defaults to the tree the checkpoint was trained on (`model.trained_data_root`)."""
    if args.data_root is None:
        args.data_root = trained_data_root(read_checkpoint(args.ckpt))
        if args.data_root is None:
            raise ValueError(
                "give --data-root (the LA tree or a corpus) to score a set, or --files to score audio files"
            )
        print(f"--data-root not given ($ASVSPOOF_ROOT unset): the tree {args.ckpt} was trained on, {args.data_root}",
              file=sys.stderr)  # fmt: skip
    name = args.corpus or detect_corpus(args.data_root)
    if name != "la19" and args.split:
        raise ValueError(f"--split {args.split} is for ASVspoof 2019 LA; the {name} corpus takes --subset")
    if name == "la19" and args.subset:
        raise ValueError(f"--subset {args.subset}: ASVspoof 2019 LA takes --split (train, dev, eval)")
    if name == "la19":
        split = args.split or ("dev" if args.calibrate else "eval")
        layout = find_la_root(args.data_root)
        if args.asv_scores is not None:  # a file the user named is read before the split is scored, not skipped after
            metrics.read_asv_scores(args.asv_scores)
        return name, split, layout.protocol_path(split), layout, None
    corpus = read_corpus(args.data_root, name, args.subset)
    print(corpus.describe(), file=sys.stderr)
    if corpus.problems:
        print(f"note: {len(corpus.problems):,} problem(s) in the key (first: {corpus.problems[0]}); python data.py "
              f"--data-root {args.data_root} --check lists them", file=sys.stderr)  # fmt: skip
    label = f"{name}_{corpus.subset}" if corpus.subset else name
    return name, label, corpus.key_file, None, corpus


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.save_every < 1:
        raise ValueError(f"--save-every must be at least 1, got {args.save_every}")
    costs = DetectionCosts(args.p_spoof, args.c_miss, args.c_fa)  # bad costs fail before any work
    device = resolve_device(args.device)
    args.num_workers = default_num_workers(args.num_workers, device)
    args.batch_size = args.batch_size if args.batch_size is not None else (64 if device.type == "cuda" else 8)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not args.files:  # the set, its key and the outputs are checked before any model is loaded or measured
        name, label, key_file, layout, corpus = plan_set(args)
        out = args.out or args.ckpt.parent / f"scores_{label}.txt"
        det = args.det or out.with_name(f"{out.stem}_det.png")
        check_outputs({"--out": out, "--det": det, "--asv5-out": args.asv5_out},
                      {"--ckpt": args.ckpt, "--asv-scores": args.asv_scores, f"the key file ({label})": key_file})  # fmt: skip
    # --files: measured at the batch the files make, within a share of the (short) job (`tune.choose_settings`)
    batch = min(args.batch_size, len(args.files)) if args.files and not args.full_length else args.batch_size
    job_steps = -(-len(args.files) // batch) if args.files else None
    scorer = load_scorer(args.ckpt, device, args.precision, args.pad, args.frontend, args.num_frames,
                         args.channels_last, batch, job_steps=job_steps)  # fmt: skip
    if args.files:
        if args.calibrate:
            raise ValueError("--calibrate needs a labelled set (--data-root), not --files")
        if args.calibrated and scorer.calibration is None:
            raise ValueError(f"--calibrated: {args.ckpt} holds no calibration; fit one with evaluate.py --ckpt "
                             f"{args.ckpt} --data-root LA --split dev --calibrate")  # fmt: skip
        decision = Decision(None if args.raw else scorer.calibration, costs)
        rows = score_files(scorer, args.files, decision, args.batch_size, args.skip_bad, args.full_length,
                           progress=len(args.files) > 1)  # fmt: skip
        if args.json:
            print(json.dumps({"checkpoint": str(args.ckpt), "decision": decision.to_json(), "files": rows},
                             allow_nan=False))  # fmt: skip
        else:
            print(format_files_table(rows, decision))
        return 0
    calibration = choose_calibration(scorer, args)
    common = (args.batch_size, args.num_workers, args.save_every, args.skip_bad, args.full_length, True, calibration)
    if layout is not None:
        res = score_split(scorer, layout, label, out, *common)
    else:
        res = score_corpus(scorer, corpus, out, *common)
    sf = res.scores
    print(f"scores written to {out} ({len(sf):,} lines, {'LLRs' if calibration else 'raw scores'})", file=sys.stderr)
    if args.calibrate:
        cal, effect = calibrate_checkpoint(args.ckpt, sf)
        print(f"calibration stored in {args.ckpt}: {metrics.describe_calibration(cal, effect)}")
        if args.json:
            print(json.dumps({"calibration": cal.to_dict(), "effect": effect, "scores": str(out)}, allow_nan=False))
        return 0
    if args.asv5_out:
        keys_out = args.asv5_out.with_name(f"{args.asv5_out.stem}_keys{args.asv5_out.suffix}")
        metrics.write_asv5_scores(args.asv5_out, sf.utt_id, sf.score)
        metrics.write_asv5_keys(keys_out, sf.utt_id, sf.key)
        print(f"ASVspoof 5 pair written: {args.asv5_out}, {keys_out}", file=sys.stderr)
    if name == "la19":
        result = report_split(sf, layout, label, det, args.asv_scores)
    else:
        result = metrics.evaluate_scores(sf)
        metrics.plot_det({out.stem: (sf.bonafide_scores, sf.spoof_scores)}, det)
        result.update(asv_scores=None, det=str(det),
                      asv_note="min t-DCF: only ASVspoof 2019 LA ships the organisers' ASV scores")  # fmt: skip
    summary = {
        "corpus": name, "split": label, "scores": str(out), "calibrated": calibration is not None,
        "n_scores": len(sf), "n_scored": res.n_scored, "n_resumed": res.n_resumed, "skipped": res.skipped,
        "seconds": round(res.seconds, 3), "files_per_s": round(res.files_per_s, 2), **result,
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, allow_nan=False))
        return 0
    if result["asv_note"]:
        print(result["asv_note"], file=sys.stderr)
    title = (
        f"{args.ckpt} on {label}: {len(sf):,} scores ({sf.bonafide_scores.size:,} bona fide, "
        f"{sf.spoof_scores.size:,} spoof), {'LLRs' if calibration else 'raw'}, in {out}; {res.n_scored:,} scored "
        f"at {res.files_per_s:.1f} files/s"
        + (f", {res.n_resumed:,} resumed" if res.n_resumed else "")
        + (f"; {len(res.skipped):,} skipped (missing/unreadable)" if res.skipped else "")
        + (f"\nASV scores: {result['asv_scores']}" if result["asv_scores"] else "")
    )
    print(metrics.format_report(result, title))
    print(f"\nDET curve written to {det}")
    return 0


if __name__ == "__main__":
    run_cli(main)
