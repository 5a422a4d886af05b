"""train.py -- train the STC LCNN on ASVspoof 2019 LA: recipes, per-epoch checkpoints, resume, curves, torchrun/DDP.

    python train.py --data-root ROOT [--recipe stc|seed|tiny] [--out RUN] [--epochs N] [any flag]
    python train.py --resume RUN [--epochs N]                    # continue RUN/last.pt with its own flags
    torchrun --nproc_per_node 8 train.py --data-root ROOT ...    # the same command on several GPUs / nodes

Reads top to bottom like nanoGPT's train.py: flags (a recipe's defaults, then explicit flags) -> DDP set-up ->
data -> model (scratch or resume) -> optimiser/scheduler -> for each epoch: `train_one_epoch`, `evaluate` on dev,
checkpoint, metrics.jsonl, curves.png. The eval split is never read.

The run folder RUN holds args.json (the resolved flags), last.pt (every epoch), best.pt (lowest dev EER, ties ->
earlier epoch), metrics.jsonl (one JSON line per epoch), curves.png, dev_scores.txt (the last epoch's dev scores
in the ASVspoof format) and tb/ (TensorBoard events, only when the tensorboard package is installed).
A checkpoint is a plain dict of tensors and plain types (`torch.load(path, weights_only=True)` reads it):
model, model_args, args, epoch, optimizer, scheduler, best_dev_eer, best_epoch, dev_eer, history, rng.
EERs are in percent everywhere in this file.

Resume is exact: a checkpoint stores every rank's RNG states and the optimiser and scheduler, and each epoch's
shuffling and worker seeds come from (seed, epoch, rank), so `--resume` reaches the metrics an uninterrupted run
reaches (bit for bit on CPU; on CUDA up to cuDNN's non-deterministic kernels).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from cli import (
    ArgumentParser,
    Progress,
    RunLock,
    add_common_args,
    atomic_write,
    default_num_workers,
    first_line,
    format_seconds,
    remove_stale_in,
    resolve_device,
    run_cli,
)
from corpora import find_la_root, spread_entries
from data import (
    ASVspoof2019LA,
    add_input_args,
    collate,
    count_bad,
    make_frontend,
)
from metrics import compute_eer, fit_dev_calibration, write_score_file
from model import (
    LCNN,
    add_model_args,
    asoftmax_lambda,
    bonafide_score,
    check_lcnn_args,
    configure_backend,
    count_parameters,
    make_adam,
    read_checkpoint,
    release_cpu_memory,
    use_bf16,
    use_channels_last,
    waves_to_logits,
)
from tune import Settings, choose_settings
from vocoders import (
    VOCODED_CACHE,
    VOCODERS,
    prepare_vocoded,
    vocv4_training_entries,
)

# ----------------------------------------------------------------------------- recipes

# The parser's defaults are the STC recipe (Lavrentyeva et al., arXiv:1904.05576, trained with the optimiser of
# the NII comparative study, Wang & Yamagishi, Interspeech 2021): 863-bin log-power STFT, 600 frames (4.9 s),
# repeat padding, random crops of long files, dropout 0.75, Adam 3e-4 (0.9, 0.999, 1e-8), StepLR x0.5 every 10
# epochs, batch 64, best epoch by dev EER. A recipe lists only what differs from these defaults.
RECIPES: dict[str, dict] = {
    "stc": {},
    # The seed recipe this project started from: 20-band log-mel, zero padding to 600 frames (6 s) from the
    # start of the file, dropout 0.1, waveform augmentation, 75 epochs, seed 1; same optimiser.
    "seed": dict(frontend="mel", pad="zeros", random_crop=False, dropout=0.1, augment=True, epochs=75, seed=1,
                 patience=0),
    # Trains on the real mini tree (279 train / 101 dev files) in well under a minute on 2 CPU cores, for tests
    # and quick checks. The STC input (863 x 600) trains at ~0.5 files/s on such a CPU; the seed recipe's
    # 20-band mel input (20 x 600, 0.35 M parameters) at ~80 files/s, so tiny is the seed model without
    # augmentation, with lr 1e-3 and batch 32 so that 3 epochs visibly lower the loss (0.69 -> ~0.3).
    "tiny": dict(frontend="mel", dropout=0.1, epochs=3, batch_size=32, lr=1e-3, patience=0),
}  # fmt: skip

# What a flag changed on --resume does. Architecture and features: refused (the weights would not fit, or would see
# other inputs). Data: refused (they decide what every epoch trained and was selected on; another value is another
# run). The schedule: set on the optimiser and scheduler, as if the run had started with it. Every other flag
# (epochs, batch size, workers, device, precision, paths, patience, ...) simply takes effect. Each change is printed.
ARCH_FLAGS = ("recipe", "frontend", "num_frames", "pad", "dropout", "loss", "margin")
DATA_FLAGS = ("seed", "limit_train", "limit_dev", "augment", "random_crop", "vocoded", "vocv4_root", "vocv4_vocoders")
SCHEDULE_FLAGS = ("lr", "lr_step", "lr_gamma")


def build_parser() -> argparse.ArgumentParser:
    """All flags of train.py, with the STC recipe as defaults."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_common_args(parser)
    add_input_args(parser)
    add_model_args(parser)
    g = parser.add_argument_group("train")
    g.add_argument("--recipe", default=None, help=f"named preset of flag defaults: {', '.join(RECIPES)} (default stc)")
    g.add_argument("--out", default=None, help="run folder (default: runs/RECIPE, or the --resume folder)")
    g.add_argument("--resume", default=None, help="continue a run: its folder (uses RUN/last.pt) or a .pt file")
    g.add_argument("--epochs", type=int, default=100, help="total number of epochs")
    g.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (betas 0.9/0.999, eps 1e-8)")
    g.add_argument("--lr-step", type=int, default=10, help="StepLR: multiply the lr by --lr-gamma every N epochs")
    g.add_argument("--lr-gamma", type=float, default=0.5, help="StepLR factor")
    g.add_argument("--dropout", type=float, default=0.75, help="dropout before the last batch norm")
    g.add_argument("--loss", choices=("ce", "asoftmax"), default="ce", help="cross-entropy or A-softmax head")
    g.add_argument("--margin", type=int, default=4, help="A-softmax angular margin m")
    g.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="seed-recipe waveform augmentation on the training set",
    )
    g.add_argument(
        "--random-crop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random windows of long training files (else from the start)",
    )
    g.add_argument("--cache-audio", action="store_true", help="decode all audio once into memory (int16)")
    # --vocode / --vocoders: the names explain.py uses for the same things (the older --vocoded / --vocv4-vocoders
    # still work; checkpoints keep storing them under their old keys)
    g.add_argument("--vocode", "--vocoded", dest="vocoded", nargs="+", choices=sorted(VOCODERS), default=[],
                   metavar="VOCODER", help="add copy-synthesised spoofs of the training bona fide made by these local "
                   f"vocoders ({', '.join(VOCODERS)}; world/mlsa need pyworld/pysptk), made once into --vocoded-cache")  # fmt: skip
    g.add_argument("--vocoded-cache", default=VOCODED_CACHE, help="where --vocode copies are kept and reused")
    g.add_argument(
        "--vocv4-root", help="add vocv4's vocoded copies of the training bona fide as spoofs (voc.v4 folder)"
    )
    g.add_argument("--vocoders", "--vocv4-vocoders", dest="vocv4_vocoders", nargs="+", default=None, metavar="VOCODER",
                   help="with --vocv4-root: only these vocoders (default: all it lists)")  # fmt: skip
    g.add_argument("--limit-train", type=int, default=0, help="use N training files spread over the protocol (0: all)")
    g.add_argument("--limit-dev", type=int, default=0, help="use N dev files spread over the protocol (0: all)")
    g.add_argument("--patience", type=int, default=50, help="stop after N epochs without a better dev EER (0: off)")
    g.add_argument("--log-every", type=float, default=5.0, help="seconds between progress lines")
    return parser  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Resolve flags: parser defaults < recipe < (on --resume) the checkpoint's flags < explicit flags.

    Raises:
        ValueError: unknown recipe, a recipe key that is not a flag, bad values, or (on --resume) an explicit flag
            that changes the architecture or the front-end of the checkpoint.
    """
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    saved, resume_path = None, None
    if first.resume:
        resume_path = resume_checkpoint_path(first.resume)
        saved = check_saved_flags(read_resume_checkpoint(resume_path)["args"], parser, resume_path)
        if "amp" in saved:  # runs written before --precision replaced --amp
            amp = saved.pop("amp")
            saved.setdefault("precision", {"off": "fp32"}.get(amp, amp))
    recipe = first.recipe or (saved["recipe"] if saved else "stc")
    if recipe not in RECIPES:
        raise ValueError(f"--recipe {recipe!r} is unknown; choose one of {', '.join(RECIPES)}")
    dests = {a.dest for a in parser._actions}
    for name, values in [(f"recipe {recipe}", RECIPES[recipe]), (f"{resume_path} stored flags", saved or {})]:
        unknown = sorted(set(values) - dests)
        if unknown:
            raise ValueError(f"{name}: unknown flag(s) {', '.join(unknown)}")
    parser.set_defaults(**RECIPES[recipe])
    if saved:
        parser.set_defaults(**{k: v for k, v in saved.items() if k not in ("resume", "out", "recipe")})
    args = parser.parse_args(argv)
    args.recipe = recipe
    args.out = args.out or (str(resume_path.parent) if resume_path else f"runs/{recipe}")
    for flag, low in (("epochs", 1), ("batch_size", 2), ("lr_step", 1), ("patience", 0)):
        if getattr(args, flag) < low:
            why = {"batch_size": " (BatchNorm trains on two items at least)"}
            raise ValueError(f"--{flag.replace('_', '-')} must be at least {low}{why.get(flag, '')}, got "
                             f"{getattr(args, flag)}")  # fmt: skip
    if not 0 <= args.seed < 2**32 - 1024:
        raise ValueError(f"--seed must be in [0, 2**32 - 1024), got {args.seed}")
    # the LCNN's own rules (model.check_lcnn_args), named as flags
    check_lcnn_args({"num_frames": args.num_frames, "dropout": args.dropout, "margin": args.margin},
                    lambda key: "--" + key.replace("_", "-"))  # fmt: skip
    for flag in ("limit_train", "limit_dev"):
        if getattr(args, flag) < 0 or getattr(args, flag) == 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be 0 (every file) or at least 2 (a file of each class), "
                             f"got {getattr(args, flag)}")  # fmt: skip
    for flag in ("lr", "lr_gamma"):
        if not getattr(args, flag) > 0 or not math.isfinite(getattr(args, flag)):
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive number, got {getattr(args, flag)}")
    args.resume_changes = {}
    if saved:
        for key in ARCH_FLAGS + DATA_FLAGS:
            if saved.get(key) != getattr(args, key):
                flag = "--" + key.replace("_", "-")
                why = "" if key in ARCH_FLAGS else ("; it decides what every epoch trained on: start a new run "
                                                    "(another --out) for another value")  # fmt: skip
                raise ValueError(f"cannot resume {resume_path}: trained with {flag} {saved.get(key)}, flags say "
                                 f"{getattr(args, key)}{why}")  # fmt: skip
        args.resume_changes = {k: (saved[k], v) for k, v in vars(args).items()
                               if k in saved and k not in ("resume", "out", "resume_changes") and saved[k] != v}  # fmt: skip
    return args


def check_saved_flags(saved, parser: argparse.ArgumentParser, path: Path) -> dict:
    """A checkpoint's stored flags with the types and choices the parser gives them (one ValueError naming the key):
    a damaged or hand-edited checkpoint must not start a run with lr = "abc"."""
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: stored args is a {type(saved).__name__}, expected the dict of train.py's flags")
    actions = {a.dest: a for a in parser._actions}
    for key, value in saved.items():
        a = actions.get(key)
        if a is None or value is None:
            continue
        values = value if isinstance(value, list) and a.nargs in ("+", "*") else [value]
        if a.choices is not None and any(v not in a.choices for v in values):
            raise ValueError(f"{path}: stored flag {key} = {value!r} is not one of {', '.join(map(str, a.choices))}")
        kinds = {int: int, float: (int, float)}.get(a.type)
        if kinds and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise ValueError(
                f"{path}: stored flag {key} = {value!r} is not {'an integer' if a.type is int else 'a number'}"
            )
        if isinstance(a, argparse._StoreTrueAction | argparse.BooleanOptionalAction) and not isinstance(value, bool):
            raise ValueError(f"{path}: stored flag {key} = {value!r} is not true/false")
    return saved


# ----------------------------------------------------------------------------- distributed helpers (one process too)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if world_size() > 1:
        dist.barrier()


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] in one process."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_ranks_true(flag: bool) -> bool:
    """True when `flag` is true on every rank (so that all ranks stop together); one small all-reduce."""
    if world_size() == 1:
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor(float(bool(flag)), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def sync_buffers(model: torch.nn.Module) -> None:
    """Average the BatchNorm running statistics over the ranks (DDP keeps each rank's own), so that every rank
    scores dev with, and rank 0 saves, the same model. Integer buffers are taken from rank 0."""
    if world_size() == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world_size())
        else:
            dist.broadcast(buffer, 0)


def setup_distributed(device_flag: str) -> torch.device:
    """Join the torchrun process group when RANK is set (nccl on CUDA, gloo on CPU); pick this process's device."""
    if "RANK" not in os.environ:
        return resolve_device(device_flag)
    use_cuda = device_flag in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = resolve_device("cpu" if device_flag == "auto" else device_flag)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return device


# ----------------------------------------------------------------------------- data


def check_both_classes(entries, what: str, flag: str, limit: int) -> None:
    """Training needs both classes, the dev EER too: ValueError before any work when a subset lacks one."""
    keys = Counter(e.key for e in entries)
    if keys["bonafide"] and keys["spoof"]:
        return
    have = ", ".join(f"{n} {k}" for k, n in keys.items()) or "no files"
    cause = f"{flag} {limit} leaves" if flag != "--skip-bad" else "after --skip-bad left files out there are"
    raise ValueError(f"{cause} {have} in the {what} set: it needs bona fide and spoof files"
                     + (f"; give {flag} 0 (all) or a larger number" if flag != "--skip-bad" else ""))  # fmt: skip


def vocoded_entries(args: argparse.Namespace, layout, train_entries) -> list:
    """The copy-synthesised spoofs --vocoded / --vocv4-root add to the training set (none by default).

    Local copies are made once by the main process into --vocoded-cache (the others wait), then reused.
    """
    extra = []
    if args.vocoded:
        if is_main():
            prepare_vocoded(layout, "train", train_entries, args.vocoded, args.vocoded_cache)
        barrier()
        extra += prepare_vocoded(layout, "train", train_entries, args.vocoded, args.vocoded_cache)
    if args.vocv4_root:
        extra += vocv4_training_entries(args.vocv4_root, train_entries, args.vocv4_vocoders)
        if not extra:
            raise ValueError(f"--vocv4-root {args.vocv4_root} has no vocoded copy of any training bona fide file")
    if extra and is_main():
        kinds = Counter(e.system for e in extra)
        print("training spoofs added by copy-synthesis: " + ", ".join(f"{k} {n:,}" for k, n in kinds.items()),
              flush=True)  # fmt: skip
    return extra


def make_loaders(
    args: argparse.Namespace, frontend, device: torch.device
) -> tuple[DataLoader, DataLoader, torch.Generator]:
    """Train loader (sharded, reshuffled per epoch) and this rank's dev shard (every rank::world_size file).

    Datasets return fixed-length waveforms; features are made on the device per batch. Batches are pinned for an
    asynchronous copy when the device is CUDA (`pin_memory_for`). The dev loader draws its worker seeds from its own
    generator, so scoring dev leaves the global RNG -- and an exact resume -- untouched.
    """
    layout = find_la_root(args.data_root)
    num_samples = frontend.num_samples(args.num_frames)
    common = dict(num_samples=num_samples, pad=args.pad, cache=args.cache_audio, skip_bad=args.skip_bad)
    train_entries = spread_entries(layout.protocol("train"), args.limit_train)
    dev_entries = spread_entries(layout.protocol("dev"), args.limit_dev)
    check_both_classes(train_entries, "training", "--limit-train", args.limit_train)  # before any decoding
    check_both_classes(dev_entries, "dev", "--limit-dev", args.limit_dev)
    train_entries = train_entries + vocoded_entries(args, layout, train_entries)
    train_set = ASVspoof2019LA(layout, "train", entries=train_entries, random_crop=args.random_crop,
                               augment=args.augment, **common)  # fmt: skip
    check_both_classes(train_set.entries, "training", "--skip-bad", args.limit_train)  # after files were left out
    dev_set = ASVspoof2019LA(layout, "dev", entries=dev_entries[rank() :: world_size()], **common)
    check_both_classes(sum(gather_objects(dev_set.entries), []), "dev", "--skip-bad", args.limit_dev)
    # the sampler shuffles with (seed, epoch); the generator (re-seeded every epoch) seeds the workers
    sampler = DistributedSampler(train_set, num_replicas=world_size(), rank=rank(), shuffle=True, seed=args.seed)
    generator = torch.Generator()
    pin, workers = pin_memory_for(device), default_num_workers(args.num_workers, device)
    # BatchNorm cannot train on a batch of one: drop a last batch that would hold a single file
    drop_last = len(sampler) % args.batch_size == 1
    train_loader = DataLoader(
        train_set,
        args.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        drop_last=drop_last,
        generator=generator,
    )
    dev_loader = DataLoader(dev_set, args.batch_size, shuffle=False, num_workers=workers,
                            collate_fn=collate, pin_memory=pin, generator=torch.Generator().manual_seed(0))  # fmt: skip
    return train_loader, dev_loader, generator  # fmt: skip


def pin_memory_for(device: torch.device) -> bool:
    """Page-locked batches (and non_blocking copies) only where there is a CUDA device to copy to."""
    return device.type == "cuda"


def batches(loader: DataLoader, skip_bad: bool = False):
    """Iterate a loader under the one bad-file policy: each batch's unusable files (`data.BadAudio` items) are
    counted in batch["n_bad"] with `skip_bad`, or stop the run with one line naming the file (`data.count_bad`)."""
    if loader.num_workers:
        release_cpu_memory()  # before the workers fork (model.release_cpu_memory)
    for batch in loader:
        count_bad(batch["bad"], skip_bad)
        yield batch


# ----------------------------------------------------------------------------- one epoch


class NonFiniteLossError(RuntimeError):
    """A NaN/inf training loss: the run stops and keeps its last good checkpoint."""


def compute_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; with the A-softmax head the logits already carry the target margin, so it is the A-softmax loss."""
    return F.cross_entropy(logits.float(), labels)


def train_one_epoch(model, frontend, loader, optimizer, device, args, epoch: int, step: int) -> dict:
    """One pass over this rank's shard of the training set.

    Args:
        model: the LCNN, possibly wrapped in DistributedDataParallel.
        step: optimiser steps taken before this epoch (anneals the A-softmax margin).
    Returns:
        dict(train_loss (mean over all ranks' files), n_bad, n_files, seconds, steps).
    Under torchrun every rank must take the same number of steps: a batch whose files are all unreadable
    (--skip-bad) is skipped, which only a single process tolerates.

    Raises:
        NonFiniteLossError: a NaN/inf loss (names epoch and step; nothing of this epoch is saved).
    """
    model.train()
    bf16 = use_bf16(args.precision, device)
    total = len(loader.sampler) * world_size()
    progress = (
        Progress(total, f"epoch {epoch}/{args.epochs}", unit="files", every=args.log_every) if is_main() else None
    )
    loss_sum, n_files, n_bad, start = 0.0, 0, 0, time.monotonic()
    for i, batch in enumerate(batches(loader, args.skip_bad), 1):
        n_bad += batch["n_bad"]
        if batch["x"] is None:  # every file of the batch was unreadable (--skip-bad)
            continue
        if len(batch["label"]) == 1:  # --skip-bad left one file: BatchNorm cannot train on it (counted as skipped)
            n_bad += 1
            continue
        y = batch["label"].to(device, non_blocking=True)  # (B,)
        margin = dict(labels=y, lamb=asoftmax_lambda(step)) if args.loss == "asoftmax" else {}
        logits = waves_to_logits(model, frontend, batch["x"], bf16, args.channels_last, **margin)  # (B, 2)
        loss = compute_loss(logits, y)
        value = loss.item()
        if not all_ranks_true(math.isfinite(value)):
            kept = f"{Path(args.out) / 'last.pt'} (epoch {epoch - 1}) is kept" if epoch > 1 else "no checkpoint yet"
            raise NonFiniteLossError(
                f"epoch {epoch} step {i}: the training loss is {value} (not finite); stopped, {kept}. Try a lower --lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_sum += value * len(y)
        n_files += len(y)
        if progress:
            progress.update(len(y) * world_size(), extra=f" loss {loss_sum / n_files:.4f}")
    if progress:
        progress.close()
    parts = gather_objects((loss_sum, n_files, n_bad))
    loss_sum, n_files, n_bad = (sum(p[k] for p in parts) for k in range(3))
    seconds = time.monotonic() - start
    return dict(train_loss=loss_sum / max(n_files, 1), n_bad=n_bad, n_files=n_files, seconds=seconds, steps=step)


@torch.no_grad()
def evaluate(
    model, frontend, loader, device, precision: str = "fp32", channels_last: bool = False, skip_bad: bool = False
) -> dict:
    """Score one loader (this rank's dev shard) with the plain model (not the DDP wrapper: shards are uneven).

    Returns:
        dict of lists, one entry per scored file: utt_id, system, key, score (logit_bona - logit_spoof, higher =
        bona fide), loss (cross-entropy of the file); n_bad (unreadable files skipped).
    """
    model.eval()
    bf16 = use_bf16(precision, device)
    out = {"utt_id": [], "system": [], "key": [], "score": [], "loss": [], "n_bad": 0}
    for batch in batches(loader, skip_bad):
        out["n_bad"] += batch["n_bad"]
        if batch["x"] is None:
            continue
        y = batch["label"].to(device)
        logits = waves_to_logits(model, frontend, batch["x"], bf16, channels_last)  # (B, 2)
        out["score"] += bonafide_score(logits).tolist()
        out["loss"] += F.cross_entropy(logits, y, reduction="none").tolist()
        out["utt_id"] += batch["utt_id"]
        out["system"] += batch["system"]
        out["key"] += ["bonafide" if label == 1 else "spoof" for label in batch["label"].tolist()]
    return out


def gather_scores(part: dict) -> dict:
    """Merge every rank's dev shard into one dict of lists (each dev file once), sorted by utt_id."""
    parts = gather_objects(part)
    rows = sorted(zip(*(sum((p[k] for p in parts), []) for k in ("utt_id", "system", "key", "score", "loss"))))
    merged = {k: [r[j] for r in rows] for j, k in enumerate(("utt_id", "system", "key", "score", "loss"))}
    merged["n_bad"] = sum(p["n_bad"] for p in parts)
    return merged


def dev_metrics(scores: dict) -> dict:
    """dev_loss (mean cross-entropy) and dev_eer (percent) of gathered dev scores."""
    score, key = np.asarray(scores["score"]), np.asarray(scores["key"])
    eer, _ = compute_eer(score[key == "bonafide"], score[key == "spoof"])
    return dict(dev_loss=float(np.mean(scores["loss"])), dev_eer=100.0 * eer)


# ----------------------------------------------------------------------------- checkpoints, RNG, files


def rng_state() -> dict:
    """This process's RNG states as tensors and plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_atomic(obj, path: Path) -> None:
    """torch.save through cli.atomic_write: a crash never leaves half a checkpoint, and a failed write (a full disk)
    keeps the previous file and says so in one line naming it."""
    try:
        with atomic_write(path, "wb") as f:
            torch.save(obj, f)
    except (RuntimeError, OSError) as e:
        free = shutil.disk_usage(path.parent).free
        cause = f"the disk is full ({free / 1e6:,.1f} MB free in {path.parent})" if free < 64e6 else first_line(e)
        kept = f"the previous {path.name} is kept" if path.is_file() else f"no {path.name} was written"
        raise OSError(f"cannot write checkpoint {path}: {cause}; {kept}") from None


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def read_resume_checkpoint(path: Path) -> dict:
    """A train.py checkpoint holding all that --resume restores (weights_only: no code runs); errors name the file."""
    ckpt = read_checkpoint(path)
    kinds = {"model": dict, "model_args": dict, "args": dict, "epoch": int, "step": int, "optimizer": dict,
             "scheduler": dict, "rng": list, "history": list, "best_dev_eer": (int, float), "best_epoch": int}  # fmt: skip
    missing = [k for k in kinds if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a resumable train.py checkpoint (missing {', '.join(missing)})")
    for key, kind in kinds.items():
        if isinstance(ckpt[key], bool) or not isinstance(ckpt[key], kind):
            raise ValueError(f"{path}: stored {key} is a {type(ckpt[key]).__name__} ({str(ckpt[key])[:40]!r}); the "
                             "checkpoint is damaged or not train.py's")  # fmt: skip
    if not {"state", "param_groups"} <= set(ckpt["optimizer"]) or not all(isinstance(h, dict) for h in ckpt["history"]):
        raise ValueError(f"{path}: stored optimizer / history are damaged (expected an Adam state and epoch records)")
    return ckpt


def restore_state(ckpt: dict, path: Path, model, optimizer, scheduler) -> None:
    """Load a checkpoint's weights, optimiser and scheduler; a mismatch is one line naming the file."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot resume {path}: its state does not fit the model the flags build "
                         f"({first_line(e)})") from None  # fmt: skip


def resume_checkpoint_path(resume: str) -> Path:
    path = Path(resume)
    return path / "last.pt" if path.is_dir() or not path.suffix else path


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """curves.png: train/dev loss per epoch (left) and dev EER per epoch with the best epoch marked (right)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in any process

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_eer = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["dev_loss"] for h in history], "s-", label="dev")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    eers = [h["dev_eer"] for h in history]
    best = int(np.argmin(eers))  # first minimum: ties go to the earlier epoch, as best.pt does
    ax_eer.plot(epochs, eers, "o-", color="tab:red", label="dev EER")
    ax_eer.plot(epochs[best], eers[best], "*", color="gold", markeredgecolor="black", markersize=16,
                label=f"best: {eers[best]:.2f} % (epoch {epochs[best]})")  # fmt: skip
    ax_eer.set(xlabel="epoch", ylabel="EER (%)", title="Dev EER", ylim=(0, max(max(eers) * 1.1, 1.0)))
    ax_eer.legend()
    for ax in (ax_loss, ax_eer):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title or f"{path.parent.name}: LCNN training curves")
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def open_tensorboard(run_dir: Path):
    """A SummaryWriter in RUN/tb when the tensorboard package is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


def write_epoch(run_dir: Path, checkpoint: dict, scores: dict, title: str, writer=None) -> None:
    """Everything an epoch leaves in RUN: dev_scores.txt, curves.png, metrics.jsonl, best.pt, then last.pt, tb/.

    last.pt is the commit point, written last: a run stopped anywhere before it resumes from the previous epoch and
    writes this one's files again, so the folder agrees with last.pt after any stop. best.pt goes before last.pt:
    if either write fails, last.pt still names a best epoch whose best.pt exists.
    """
    metrics = checkpoint["history"][-1]
    write_score_file(run_dir / "dev_scores.txt", scores["utt_id"], scores["system"], scores["key"], scores["score"])
    plot_curves(checkpoint["history"], run_dir / "curves.png", title)
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in checkpoint["history"]))
    if checkpoint["best_epoch"] == checkpoint["epoch"]:
        save_atomic(checkpoint, run_dir / "best.pt")
    save_atomic(checkpoint, run_dir / "last.pt")
    if writer:
        for key in ("train_loss", "dev_loss", "dev_eer", "lr"):
            writer.add_scalar(key, metrics[key], checkpoint["epoch"])
        writer.flush()


# ----------------------------------------------------------------------------- the run


def set_schedule(optimizer, scheduler, args: argparse.Namespace, epochs_done: int) -> None:
    """Put --lr / --lr-step / --lr-gamma given on --resume into effect: StepLR as if the run had started with them
    (lr after `epochs_done` epochs = lr x gamma^(epochs_done // step))."""
    scheduler.step_size, scheduler.gamma = args.lr_step, args.lr_gamma
    scheduler.base_lrs = [args.lr for _ in optimizer.param_groups]
    now = args.lr * args.lr_gamma ** (epochs_done // args.lr_step)
    for group in optimizer.param_groups:
        group["lr"], group["initial_lr"] = now, args.lr
    scheduler._last_lr = [now for _ in optimizer.param_groups]


def describe_changes(changes: dict) -> str:
    """'--lr 0.0003 -> 0.1 (...)' for each flag changed on --resume, with what the change does."""
    notes = {"batch_size": "batches differ from here: no longer bit-identical to an uninterrupted run",
             "data_root": "the same protocol lines are read from the new place",
             "epochs": "the run's length", "patience": "early stopping from here"}  # fmt: skip
    out = []
    for key, (old, new) in changes.items():
        note = "the optimiser and StepLR are set to it" if key in SCHEDULE_FLAGS else notes.get(key, "takes effect")
        out.append(f"--{key.replace('_', '-')} {old} -> {new} ({note})")
    return "; ".join(out)


def make_model(args: argparse.Namespace, n_bins: int, device: torch.device):
    """(LCNN on `device` in the resolved memory format, Adam (`model.make_adam`), StepLR) as the flags say."""
    head = "asoftmax" if args.loss == "asoftmax" else "linear"
    model = LCNN(n_bins, args.num_frames, args.dropout, head, args.margin).to(device)
    if use_channels_last(args.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_adam(model.parameters(), args.lr, device)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step, gamma=args.lr_gamma)
    return model, optimizer, scheduler


@dataclass
class RunState:
    """What a run has done so far: everything `last.pt` must hold besides the weights and the optimiser.

    The loop changes only this object; `checkpoint` reads it, so no closure sees a stale variable.
    """

    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken
    history: list[dict] = field(default_factory=list)  # one metrics record per finished epoch
    best_eer: float = math.inf
    best_epoch: int = 0
    pending: dict | None = None  # an epoch trained whose dev scoring did not finish (the epoch's train result)

    @classmethod
    def from_checkpoint(cls, ckpt: dict | None) -> RunState:
        if not ckpt:
            return cls()
        return cls(ckpt["epoch"], ckpt["step"], ckpt["history"], ckpt["best_dev_eer"], ckpt["best_epoch"],
                   ckpt.get("dev_pending"))  # fmt: skip

    def record(self, metrics: dict) -> dict:
        """Add a finished epoch's metrics (with the best epoch so far) to the history; returns the record."""
        if metrics["dev_eer"] < self.best_eer:
            self.best_eer, self.best_epoch = metrics["dev_eer"], metrics["epoch"]
        metrics.update(best_dev_eer=self.best_eer, best_epoch=self.best_epoch)
        self.history.append(metrics)
        self.epoch = metrics["epoch"]
        return metrics

    def checkpoint(self, model, optimizer, scheduler, flags: dict, data_root: str, epoch: int, **extra) -> dict:
        """The checkpoint dict (plain types and tensors: torch.load(weights_only=True) reads it)."""
        return {
            "model": model.state_dict(), "model_args": model.model_args(), "args": flags,
            "epoch": epoch, "step": self.step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "dev_eer": self.history[-1]["dev_eer"] if self.history else None, "best_dev_eer": self.best_eer,
            "best_epoch": self.best_epoch, "history": self.history, "rng": gather_objects(rng_state()),
            "data_root_abs": str(Path(data_root).resolve()), **extra,
        }  # fmt: skip


def start_run(args: argparse.Namespace, run_dir: Path, flags: dict) -> dict | None:
    """Check the run folder and the resumed checkpoint before any work; returns that checkpoint (None: a new run)."""
    ckpt = read_resume_checkpoint(resume_checkpoint_path(args.resume)) if args.resume else None
    if not args.resume and (run_dir / "last.pt").exists():  # checked on every rank, so that all stop together
        raise FileExistsError(
            f"--out {run_dir} already holds a run (last.pt): pass --resume {run_dir} or another --out"
        )
    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in remove_stale_in(run_dir):  # what a killed write left (curves.png's temporary, ...)
            print(f"removed {tmp.name}, left by an interrupted write", file=sys.stderr)
        write_text_atomic(run_dir / "args.json", json.dumps(flags, indent=2) + "\n")
        print(f"recipe {args.recipe}, flags: " + ", ".join(f"{k}={v}" for k, v in sorted(flags.items())), flush=True)
    return ckpt


def resume_into(ckpt: dict, args: argparse.Namespace, run_dir: Path, model, optimizer, scheduler) -> RunState:
    """Restore weights, optimiser, schedule and RNG from a checkpoint; say what changed and what is missing."""
    path, changes = resume_checkpoint_path(args.resume), getattr(args, "resume_changes", {})
    restore_state(ckpt, path, model, optimizer, scheduler)
    state = RunState.from_checkpoint(ckpt)
    if any(k in changes for k in SCHEDULE_FLAGS):
        set_schedule(optimizer, scheduler, args, state.epoch)
    if is_main() and changes:
        print(f"resuming {args.resume} after epoch {state.epoch}; changed on resume: " + describe_changes(changes),
              flush=True)  # fmt: skip
    if is_main() and state.best_epoch and not (run_dir / "best.pt").is_file():
        print(f"warning: {run_dir / 'best.pt'} (epoch {state.best_epoch}, dev EER {state.best_eer:.2f} %) is missing; "
              "the run goes on and writes best.pt at its next best epoch", file=sys.stderr)  # fmt: skip
    if len(ckpt["rng"]) == world_size():
        set_rng_state(ckpt["rng"][rank()])
    elif is_main():
        print(f"note: {args.resume} was written by {len(ckpt['rng'])} process(es), this run has {world_size()}: "
              "RNG streams restart from --seed, so the result will differ from an uninterrupted run")  # fmt: skip
    return state


def choose_run_settings(
    args: argparse.Namespace, frontend, device: torch.device, job_steps: int | None = None
) -> Settings:
    """Settle --precision auto and the memory format for this run (`tune.choose_settings`, mode "train", at the
    run's batch and input length; the run's `job_steps` bound its cost) and write the choice into `args` (precision
    "fp32"/"bf16", channels_last a bool), which the training step, dev scoring and `make_model` then read. Under torchrun rank 0 measures and prints,
    every rank takes its choice. The global RNG streams are left as they were (the probe model is built in a fork)."""
    settings = None
    if is_main():
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            head = "asoftmax" if args.loss == "asoftmax" else "linear"
            probe = LCNN(frontend.n_bins, args.num_frames, args.dropout, head, args.margin)
        shape = (args.batch_size, frontend.num_samples(args.num_frames))
        settings = choose_settings(probe, frontend, device, shape, "train", args.precision, args.channels_last,
                                   job_steps=job_steps)  # fmt: skip
        print(settings.describe(), flush=True)
    settings = gather_objects(settings)[0]
    args.precision, args.channels_last = settings.precision, settings.channels_last
    return settings


def train(args: argparse.Namespace) -> list[dict]:
    """Train as the flags say; returns the history (one metrics dict per epoch). Reads top to bottom as nanoGPT's:
    set-up -> data -> model (scratch or resume) -> for each epoch: train, score dev, write the epoch."""
    flags = {k: v for k, v in vars(args).items() if k != "resume_changes"}  # as given: args.json, checkpoints
    device = setup_distributed(args.device)
    use_bf16(args.precision, device)  # a bad --precision fails here, before any work
    torch.manual_seed(args.seed + rank())  # per-rank offset: dropout and augmentation differ between ranks
    np.random.seed(args.seed + rank())
    random.seed(args.seed + rank())
    configure_backend(device)  # cuDNN autotuning + TF32 on CUDA; the allocator on the CPU
    run_dir = Path(args.out)
    ckpt = start_run(args, run_dir, flags)

    # data: waveforms from the loaders, features on the device
    frontend = make_frontend(args.frontend).to(device)
    train_loader, dev_loader, generator = make_loaders(args, frontend, device)
    # files --skip-bad left out before the first epoch (missing, empty, undecodable): counted in every epoch's n_bad
    n_left_out = len(train_loader.dataset.skipped) + len(dev_loader.dataset.skipped)

    # precision and memory format: the flags, the cache, or a measurement of the real step (printed)
    choose_run_settings(args, frontend, device, args.epochs * len(train_loader))
    # model, optimiser, scheduler: from scratch or from the checkpoint
    raw_model, optimizer, scheduler = make_model(args, frontend.n_bins, device)
    state = resume_into(ckpt, args, run_dir, raw_model, optimizer, scheduler) if ckpt else RunState()
    model = raw_model
    if world_size() > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    n_dev = sum(gather_objects(len(dev_loader.dataset)))
    if is_main():
        write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))
        print(f"LCNN: {count_parameters(raw_model):,} parameters, input {frontend.n_bins} x {args.num_frames}; "
              f"train {len(train_loader.dataset):,} / dev {n_dev:,} files, {world_size()} process(es) on {device}", flush=True)  # fmt: skip
        if state.epoch >= args.epochs and not state.pending:
            print(f"{args.resume} already holds {state.epoch} epochs (--epochs {args.epochs}): nothing to train")
    writer = open_tensorboard(run_dir) if is_main() else None
    best_calibration = "as stored in best.pt (fitted before this resume)"
    run_start, first_epoch = time.monotonic(), state.epoch + (0 if state.pending else 1)
    title = f"{run_dir.name}: LCNN, recipe {args.recipe}, {args.frontend} {frontend.n_bins} x {args.num_frames}"
    saved_parts = (raw_model, optimizer, scheduler, flags, args.data_root)  # what RunState.checkpoint saves

    for epoch in range(first_epoch, args.epochs + 1):
        if state.pending:  # resume of an epoch whose dev scoring failed: its training is in the checkpoint
            result, state.pending = state.pending, None
            if is_main():
                print(f"epoch {epoch}: trained before the interruption; scoring dev now", flush=True)
        else:
            train_loader.sampler.set_epoch(epoch)
            generator.manual_seed(args.seed * 1_000_003 + epoch * 1009 + rank())  # this epoch's worker seeds
            lr = optimizer.param_groups[0]["lr"]
            result = train_one_epoch(model, frontend, train_loader, optimizer, device, args, epoch, state.step)
            result = dict(result, lr=lr, seconds=round(result["seconds"], 2))
            state.step = result["steps"]
            scheduler.step()
            sync_buffers(raw_model)
        try:
            scores = gather_scores(
                evaluate(raw_model, frontend, dev_loader, device, args.precision, args.channels_last, args.skip_bad)
            )
            dev = dev_metrics(scores)
        except BaseException:
            if is_main() and world_size() == 1:  # (under torchrun the other ranks may be gone: no collective here)
                save_atomic(state.checkpoint(*saved_parts, epoch, dev_pending=result), run_dir / "last.pt")
                print(f"epoch {epoch} is trained and kept in {run_dir / 'last.pt'}; its dev scoring failed (below). "
                      f"Fix the cause and pass --resume {run_dir}: dev is scored again, nothing is retrained",
                      file=sys.stderr, flush=True)  # fmt: skip
            raise
        metrics = state.record(dict(
            epoch=epoch, train_loss=result["train_loss"], **dev, lr=result["lr"],
            n_bad=n_left_out + result["n_bad"] + scores["n_bad"], n_train=result["n_files"], n_dev=len(scores["score"]),
            seconds=result["seconds"], files_per_s=round(result["n_files"] / max(result["seconds"], 1e-9), 2)))  # fmt: skip
        # issue 16: each checkpoint carries llr = a * score + b fitted on its own epoch's dev scores, so best.pt holds
        # the selected epoch's calibration even when the run is interrupted (evaluate.py writes LLRs with it)
        calibration, calibration_line = fit_dev_calibration(scores["score"], scores["key"])
        best_calibration = calibration_line if state.best_epoch == epoch else best_calibration
        checkpoint = state.checkpoint(*saved_parts, epoch, calibration=calibration)  # every rank: it gathers RNG states
        if is_main():
            write_epoch(run_dir, checkpoint, scores, title, writer)
            left = (time.monotonic() - run_start) / max(epoch - first_epoch + 1, 1) * (args.epochs - epoch)
            print(f"epoch {epoch}/{args.epochs}: train loss {metrics['train_loss']:.4f}, dev loss "
                  f"{metrics['dev_loss']:.4f}, dev EER {metrics['dev_eer']:.2f} % (best {state.best_eer:.2f} % @ "
                  f"{state.best_epoch}), lr {metrics['lr']:.2e}, {metrics['files_per_s']:.1f} files/s, "
                  f"{format_seconds(result['seconds'])}, bad files {metrics['n_bad']}, run ETA {format_seconds(left)}",
                  flush=True)  # fmt: skip
        if args.patience and epoch - state.best_epoch >= args.patience:
            if is_main():
                print(f"early stop: no better dev EER for {args.patience} epochs (best {state.best_eer:.2f} % @ "
                      f"{state.best_epoch})")  # fmt: skip
            break
    if writer:
        writer.close()
    if is_main() and state.history:
        best_pt = run_dir / "best.pt"
        where = (
            best_pt
            if best_pt.is_file()
            else f"best.pt of the run resumed ({resume_checkpoint_path(args.resume).parent / 'best.pt'}); {run_dir} holds none, since no epoch here beat it"
        )
        print(f"done: best dev EER {state.best_eer:.2f} % at epoch {state.best_epoch}; {where}", flush=True)
        print(f"calibration in best.pt (epoch {state.best_epoch} dev scores): {best_calibration}", flush=True)
    return state.history


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # one run per folder: a second train.py into the same --out stops at once (rank 0 holds the lock; torchrun's
    # RANK is read before the process group exists)
    lock = RunLock(args.out, "--out") if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
    try:
        with lock:
            train(args)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_cli(main)
