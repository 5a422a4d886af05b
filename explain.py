"""explain.py -- where does the LCNN look? Ground-truth masks from real/vocoded pairs vs Grad-CAM and InputXGradient,
over one pair or many, with agreement, sanity and faithfulness measures.

    python explain.py --utt LA_T_4179989                       # the newest runs/*/best.pt; local vocoders
    python explain.py --utt LA_T_4179989 --vocv4-root DIR/voc.v4 --vocoders hifigan waveglow
    python explain.py --real real.flac --fake vocoded.flac [more.flac ...]
    python explain.py --real-dir ../shared/data/asvspoof2019_la_enrollment --vocode world melgl --ckpt runs/xai/best.pt
    python explain.py --split dev --data-root /data/LA --vocode griffinlim melgl --limit 200
    python explain.py --vocv4-root DIR/voc.v4 --data-root /data/LA --vocoders hifigan waveglow --speakers LA_0079

One *pair* is a bona fide waveform and a vocoded copy of the same utterance. For each pair: the fake comes from vocv4
(project09-voc.v4, Zenodo 7314976, arXiv:2210.10570; start-aligned, so lag 0 and the end trimmed), from files on the
command line, or from a local vocoder (`--vocode`, vocoders.VOCODERS; aligned by envelope cross-correlation); a pair that
is not one (identical, unrelated, offset beyond the search) is refused. Both sides go through the checkpoint's
front-end and input length; then the Eq. 2 mask, Grad-CAM and InputXGradient, agreement, the randomisation check and
the deletion/insertion test run on them (the methods: xai.py; the numbers over pairs and the figures: report.py).

This file holds:
  the model       find_default_checkpoint, ModelInfo, NonFiniteModelError, check_finite_weights, load_model, predict
  which pairs     PairSpec, SPEAKER_RE, SOURCES, pair_source, local_pairs, checked_audio, one function per source
                  (pairs_of_utt, pairs_of_real, pairs_of_split, pairs_of_real_dir, pairs_of_vocv4; PAIR_SOURCES),
                  collect_pairs (the source's pairs, then --speakers / --limit)
  one pair        load_pair, pair_inputs, faithfulness, explain_pair
  the run         SETTING_KEYS, run_settings, finished_pairs, explain_pairs (resumable)
  the flags       build_parser, check_flags (checks only), resolve_defaults (the one place a default is decided), main

Outputs in --out: pairs/<vocoder>__<name>.json (one result per pair, written as it finishes: a rerun skips them and
recomputes any that cannot be read), failed.json, summary.json and the printed summary, summary_agreement.png,
summary_faithfulness.png, summary_sanity.png, and for the first --figures pairs pair_*.png, maps_*.png, sanity_*.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import cli
import corpora
import data
import model as model_lib
import report
import tune
import vocoders
import xai
from report import Agreement, PairMaps, PairResult, Prediction

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- the model and its inputs


def find_default_checkpoint() -> Path | None:
    """Newest runs/*/best.pt in the working folder, else next to this script (what train.py wrote last)."""
    for base in dict.fromkeys([Path.cwd(), HERE]):
        found = sorted((base / "runs").glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


@dataclass
class ModelInfo:
    """The model being explained and the input it takes."""

    ckpt: str | None  # None: --random-model
    trained: bool
    frontend: str
    num_frames: int
    pad: str
    epoch: int | None
    dev_eer: float | None
    recipe: str | None
    data_root: str | None  # the tree it was trained on (the default --data-root)
    bf16: bool
    channels_last: bool
    sha256: str | None = None


class NonFiniteModelError(RuntimeError):
    """The model gave NaN / inf logits on finite audio: the whole run stops (every pair would fail the same way)."""


def check_finite_weights(model: nn.Module, path: Path) -> None:
    """Raises ValueError naming the checkpoint and the first non-finite tensor (damaged or diverged weights)."""
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"--ckpt {path}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}): the checkpoint "
                         "is damaged or its run diverged; explain another checkpoint")  # fmt: skip


def load_model(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, ModelInfo]:
    """The model to explain (`model.load_checkpoint`, the one reader): --ckpt, else the newest runs/*/best.pt, else
    (only with --random-model) a randomly initialised LCNN. --frontend / --num-frames must agree with a checkpoint
    (its FC layer fixes the input), as evaluate.py requires; --pad overrides its padding.

    Raises:
        FileNotFoundError: no --ckpt, no runs/*/best.pt and no --random-model (the message says how to get a model).
        ValueError: an unreadable checkpoint, flags that contradict it, or non-finite weights.
    """
    model_lib.use_bf16(args.precision, device)  # a bad --precision fails before any work
    path = Path(args.ckpt) if args.ckpt else (None if args.random_model else find_default_checkpoint())
    if path is None and not args.random_model:
        raise FileNotFoundError(
            "no --ckpt given and no runs/*/best.pt here: train a model first (e.g. python train.py --data-root "
            "demo_data/LA --recipe tiny), pass --ckpt FILE, or --random-model to explain an untrained LCNN (its maps "
            "explain nothing about spoofing)"
        )
    if path is not None:
        try:
            ckpt = model_lib.load_checkpoint(path, device)
        except ValueError as e:
            raise ValueError(f"--ckpt {e}") from None
        model_lib.check_input_flags(ckpt, args.frontend, args.num_frames)
        check_finite_weights(ckpt.model, path)
        settings = choose_explain_settings(args, ckpt.model, ckpt.frontend_name, device)
        info = ModelInfo(str(path), True, ckpt.frontend_name, ckpt.num_frames, args.pad or ckpt.pad,
                         ckpt.raw.get("epoch"), ckpt.raw.get("best_dev_eer", ckpt.raw.get("dev_eer")),
                         ckpt.args.get("recipe"), ckpt.data_root, settings.bf16, settings.channels_last,
                         hashlib.sha256(path.read_bytes()).hexdigest())  # fmt: skip
        print(f"model: {ckpt.describe()}")
        return ckpt.model.to(memory_format=memory_format(settings)), info
    frontend = data.make_frontend(args.frontend or "stft")
    num_frames = args.num_frames or 600
    torch.manual_seed(args.seed)
    model = model_lib.LCNN(frontend.n_bins, num_frames).to(device).eval()
    settings = choose_explain_settings(args, model, frontend.name, device)
    print("WARNING: --random-model: explaining a RANDOMLY INITIALISED LCNN. Its attributions explain nothing about "
          "spoofing; they are a baseline for the sanity check.", file=sys.stderr)  # fmt: skip
    info = ModelInfo(None, False, frontend.name, num_frames, args.pad or "repeat", None, None, None, None,
                     settings.bf16, settings.channels_last)  # fmt: skip
    return model.to(memory_format=memory_format(settings)), info


def choose_explain_settings(args: argparse.Namespace, model: nn.Module, frontend: str, device: torch.device):
    """--precision / --channels-last for the explanations (`tune.choose_settings`, printed to stderr), measured as an
    "explain" step of 2 inputs (eval mode, forward + backward): the maps need gradients, and bf16 auto is not cleared
    for gradients on the CPU (`tune.BF16_AUTO`)."""
    fe = data.make_frontend(frontend).to(device)
    shape = (2, fe.num_samples(model.num_frames))
    settings = tune.choose_settings(model, fe, device, shape, "explain", args.precision, args.channels_last)
    print(settings.describe(), file=sys.stderr, flush=True)
    return settings


def memory_format(settings: tune.Settings) -> torch.memory_format:
    return torch.channels_last if settings.channels_last else torch.contiguous_format


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, bf16: bool = False) -> Prediction:
    """The decision on one (1, 1, F, T) input (`model.classify`, `model.bonafide_score`).

    Raises:
        NonFiniteModelError: NaN / inf logits (the input was checked finite when it was read).
    """
    logits = model_lib.classify(model, x, bf16)[0].float()
    if not torch.isfinite(logits).all():
        raise NonFiniteModelError(f"the model gave non-finite logits {logits.tolist()} on finite audio: its weights "
                                  "are damaged or the run diverged; explain another checkpoint")  # fmt: skip
    p = torch.softmax(logits, 0)
    return Prediction(float(logits[0]), float(logits[1]), float(model_lib.bonafide_score(logits)), float(p[1]),
                      int(logits.argmax()))  # fmt: skip


# ----------------------------------------------------------------------------- which pairs: one function per source


@dataclass(frozen=True)
class PairSpec:
    """One pair to explain, before any audio is read."""

    name: str  # the bona fide recording's utterance id or file stem
    vocoder: str  # local vocoder, vocv4 vocoder, or the fake file's stem
    real: str  # bona fide audio file
    fake: str | None  # vocoded audio file; None: made by the local vocoder `vocoder`
    speaker: str | None
    source: str
    align: str  # xai.ALIGN_METHODS: "start" for vocv4 copies, else --align

    @property
    def pair_id(self) -> str:
        return re.sub(r"[^\w.-]", "_", f"{self.vocoder}__{self.name}")


SPEAKER_RE = re.compile(r"(LA_\d{4})")
SOURCES = ("utt", "real", "split", "real_dir", "vocv4_root")  # the pair sources, as argparse dests


def pair_source(args) -> str:
    """Which source the flags name: exactly one of --utt, --real, --split, --real-dir, or --vocv4-root alone."""
    given = [s for s in SOURCES[:4] if getattr(args, s)]
    if len(given) > 1 or (not given and not args.vocv4_root):
        raise ValueError("give exactly one of --utt UTT_ID, --real FILE, --split SPLIT, --real-dir DIR, or "
                         "--vocv4-root DIR alone (every vocv4 pair)")  # fmt: skip
    return given[0] if given else "vocv4_root"


def local_pairs(name: str, real: str, speaker: str | None, what: str, args) -> list[PairSpec]:
    """`real` paired with each --vocode local vocoder (aligned by --align)."""
    return [PairSpec(name, v, real, None, speaker, f"local vocoder {v} of {what}", args.align) for v in args.vocode]


def checked_audio(la: corpora.LALayout, split: str, entries: list[corpora.ProtocolEntry], skip_bad: bool):
    """(entry, its audio path) for protocol entries whose audio is in the split's flac/ folder -- the check every
    script makes (`data.find_missing`, one directory listing), so an utterance id that names a path outside the tree
    ('../../../outside/good') is refused here as data.py, train.py and evaluate.py refuse it. Paths come from
    `LALayout.entry_path`, the one place an entry's audio path is decided.

    Raises:
        FileNotFoundError: listing the problems, unless `skip_bad` (then they are left out, counted on stderr).
    """
    problems = data.find_missing(la, split, entries)
    if problems and not skip_bad:
        raise FileNotFoundError(f"{len(problems)} of {len(entries):,} {split} file(s) cannot be used (pass --skip-bad "
                                f"to leave them out):\n{data.format_problems(problems)}")  # fmt: skip
    if problems:
        print(f"--skip-bad: {len(problems)} {split} file(s) left out (first: {problems[0]})", file=sys.stderr)
    bad = {p.utt_id for p in problems} | ({e.utt_id for e in entries} if any(p.utt_id is None for p in problems)
                                          else set())  # fmt: skip
    return [(e, la.entry_path(split, e)) for e in entries if e.utt_id not in bad]


def pairs_of_utt(args) -> list[PairSpec]:
    """--utt: one LA utterance, with its vocv4 copies (--vocv4-root) and its local copies (--vocode)."""
    la = corpora.find_la_root(args.data_root)
    split, entry = corpora.find_utterance(la, args.utt)
    if entry.key != "bonafide":
        print(f"warning: {args.utt} is a {entry.system} spoof, not bona fide: the 'real' side is itself fake",
              file=sys.stderr)  # fmt: skip
    problems = data.find_missing(la, split, [entry])  # the check checked_audio makes, as one line
    if problems:
        raise FileNotFoundError(str(problems[0]))
    path = la.entry_path(split, entry)
    specs = []
    if args.vocv4_root:
        for vocoder, fp in corpora.find_vocv4_files(args.vocv4_root, args.utt, args.vocoders).items():
            specs.append(PairSpec(args.utt, vocoder, str(path), str(fp), entry.speaker, f"vocv4 {fp}", "start"))
    return specs + local_pairs(args.utt, str(path), entry.speaker, str(path), args)


def pairs_of_real(args) -> list[PairSpec]:
    """--real FILE [--fake FILE ...]: the fakes as given (aligned by --align), and local copies (--vocode)."""
    real = Path(args.real)
    if not real.is_file():
        raise FileNotFoundError(f"--real {real}: no such audio file")
    specs = []
    for fake in map(Path, args.fake):
        if not fake.is_file():
            raise FileNotFoundError(f"--fake {fake}: no such audio file")
        name = fake.stem if fake.stem != real.stem else fake.parent.name or "fake"
        specs.append(PairSpec(real.stem, name, str(real), str(fake), None, str(fake), args.align))
    return specs + local_pairs(real.stem, str(real), None, str(real), args)


def pairs_of_split(args) -> list[PairSpec]:
    """--split: every bona fide file of an LA split, with local copies."""
    la = corpora.find_la_root(args.data_root)
    bona = [e for e in la.protocol(args.split) if e.key == "bonafide"]
    return [spec for e, path in checked_audio(la, args.split, bona, args.skip_bad)
            for spec in local_pairs(e.utt_id, str(path), e.speaker, f"{args.split} {e.utt_id}", args)]  # fmt: skip


def pairs_of_real_dir(args) -> list[PairSpec]:
    """--real-dir: every .flac / .wav under a folder as a bona fide recording (speaker from an LA_dddd in the name)."""
    folder = Path(args.real_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--real-dir {folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".flac", ".wav") and p.is_file())
    if not files:
        raise FileNotFoundError(f"--real-dir {folder}: no .flac or .wav files in it")
    specs = []
    for p in files:
        m = SPEAKER_RE.match(p.stem)
        specs += local_pairs(p.stem, str(p), m.group(1) if m else None, str(p), args)
    return specs


def pairs_of_vocv4(args) -> list[PairSpec]:
    """--vocv4-root alone: every vocv4 copy with its LA original (train/dev/eval tree under --data-root)."""
    la = corpora.find_la_root(args.data_root)
    # vocv4 names end in an LA id by pattern (corpora.read_vocv4_protocol), so the original's path stays in its folder
    return [PairSpec(v.utt_id, v.vocoder, str(la.audio_path(corpora.split_of_utt(v.utt_id), v.utt_id)), str(fp), v.speaker,
                     f"vocv4 {fp}", "start") for v, fp in corpora.vocv4_files(args.vocv4_root, args.vocoders)]  # fmt: skip


PAIR_SOURCES = {"utt": pairs_of_utt, "real": pairs_of_real, "split": pairs_of_split, "real_dir": pairs_of_real_dir,
                "vocv4_root": pairs_of_vocv4}  # fmt: skip


def collect_pairs(args) -> list[PairSpec]:
    """The pairs the (resolved) flags ask for, in a fixed order: the source's pairs, then --speakers and --limit.

    Raises:
        ValueError: two pairs with one name, or none left.
    """
    specs = PAIR_SOURCES[pair_source(args)](args)
    if args.speakers:
        specs = [s for s in specs if s.speaker in set(args.speakers)]
    if args.limit:
        keep = set(list(dict.fromkeys(s.name for s in specs))[: args.limit])  # the first N recordings, all their fakes
        specs = [s for s in specs if s.name in keep]
    ids = [s.pair_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two pairs share a name ({', '.join(i for i in ids if ids.count(i) > 1)}): rename the files")
    if not specs:
        raise ValueError("no pair to explain: the filters (--speakers, --limit, --vocoders, --vocode) leave none")
    return specs


# ----------------------------------------------------------------------------- one pair end to end


def load_pair(spec: PairSpec, keep_s: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, fake) waveforms of a pair. A local vocoder copies only the first `keep_s` seconds of the real
    recording (the explained window and a margin), so a 14 s segment costs what its 2 s window costs."""
    real = data.load_audio(spec.real)
    if spec.fake is not None:
        return real, data.load_audio(spec.fake)
    if keep_s is not None:
        real = real[: round(keep_s * data.SAMPLE_RATE)]
    return real, vocoders.vocode(real, spec.vocoder)


def pair_inputs(real: torch.Tensor, fake: torch.Tensor, align: str, frontend, info: ModelInfo, args, device) -> dict:
    """Align the pair, check that it is one, and make the model inputs and the magnitudes for the mask on the same
    frames.

    The window starts at --start-s rounded to whole hops, so its frames are frames of the whole aligned pair;
    the magnitudes for the mask are sliced from the STFT of the whole pair rather than of the cropped window,
    whose two edges a centred STFT pads by reflection -- and a reflection of two waveforms with different
    phase differs, which would put the crop's edges in the mask although the vocoder did not change them.

    Raises:
        ValueError: a side too short, --start-s past the end, or not a pair (`xai.pair_problem`).
    """
    sr, hop = frontend.sample_rate, frontend.hop_length
    shortest = max(args.freq_size, args.time_size) * hop  # the smoothing needs a few frames of the pair
    for side, w in (("real", real), ("vocoded", fake)):
        if w.numel() < shortest:
            raise ValueError(f"the {side} side is {w.numel()} samples long; a pair needs at least {shortest} "
                             f"({shortest / sr:.2f} s)")  # fmt: skip
    max_lag = round(args.max_lag_s * sr)
    real, fake, lag, estimate = xai.align_pair(real, fake, max_lag, align)
    problem = xai.pair_problem(real, fake, estimate if align != "start" else 0, max_lag)
    if problem:
        raise ValueError(f"not a real/vocoded pair: {problem}")
    first = round(args.start_s * sr / hop)  # first frame of the window
    if first * hop >= real.numel():
        raise ValueError(f"--start-s {args.start_s} is past the end of the {real.numel() / sr:.2f} s pair")
    num_samples = frontend.num_samples(info.num_frames)
    waves = torch.stack([data.fix_length(w[first * hop :], num_samples, info.pad) for w in (real, fake)])
    # mask, maps and metrics cover the frames of real audio; a short clip is repeat-padded to the model's input
    valid = min(info.num_frames, (real.numel() - first * hop - 1) // hop + 1)
    with torch.no_grad():
        x_real, x_fake = model_lib.featurize(frontend, waves.to(device), info.channels_last).split(1)  # (1, 1, F, T)
        mag = frontend.power(torch.stack([real, fake]).to(device)).sqrt()[:, :, first : first + valid].cpu()
    return {"lag": lag, "lag_estimate": estimate, "envelope_corr": xai.envelope_correlation(real, fake),
            "seconds": (real.numel() - first * hop) / sr, "start_s": first * hop / sr, "frames": valid,
            "x_real": x_real, "x_fake": x_fake, "mag_real": mag[0], "mag_fake": mag[1]}  # fmt: skip


def faithfulness(model, x_real, x_fake, maps: dict, rel: torch.Tensor, valid: int, pair_id: str, args, bf16: bool):
    """The deletion/insertion curves of the spoof logit for the spoof maps, the Eq. 2 ranking, a random ranking
    and the first-order bounds (`xai.first_order_effect`, signed so that "best" moves the logit the expected way)."""
    target = corpora.LABEL_SPOOF
    g = torch.Generator().manual_seed(int(hashlib.sha256(pair_id.encode()).hexdigest()[:8], 16))
    rankings = {**{k: maps[k] for k in ("gradcam", "ixg", "ixg_abs")}, "ground_truth": rel,
                "random": torch.rand(rel.shape, generator=g, dtype=torch.float64)}  # fmt: skip
    ks = tuple(args.faith_ks)
    curves = {}
    for direction, x_from, x_to in (("restore", x_fake, x_real), ("insert", x_real, x_fake)):
        sign = xai.curve_sign(direction, target, corpora.LABEL_SPOOF)
        grad = xai.input_gradient(model, x_from, target, bf16)
        effect = sign * xai.first_order_effect(grad, x_from, x_to, valid)
        bounds = {"bound_best": effect, "bound_worst": -effect}
        curves[direction] = xai.perturbation_curves(model, x_from, x_to, {**rankings, **bounds}, ks, valid, target,
                                                    bf16)  # fmt: skip
    with torch.no_grad():
        start_fake, start_real = (float(model_lib.classify(model, x, bf16)[0, target]) for x in (x_fake, x_real))
    return report.Faithfulness("spoof", list(ks), start_fake, start_real, curves["restore"], curves["insert"])


def explain_pair(spec: PairSpec, model: nn.Module, frontend, info: ModelInfo, layer: nn.Module, args):
    """Align, check, featurise, mask, attribute, score and perturb one pair.

    Returns:
        (PairResult, PairMaps).
    """
    t0 = time.monotonic()
    window_s = frontend.num_samples(info.num_frames) / frontend.sample_rate
    real, fake = load_pair(spec, args.start_s + window_s + args.max_lag_s + 0.25)
    device = next(model.parameters()).device
    p = pair_inputs(real, fake, spec.align, frontend, info, args, device)
    valid, x_real, x_fake, bf16 = p["frames"], p["x_real"], p["x_fake"], info.bf16
    kernel = {k: getattr(args, k) for k in ("time_size", "freq_size", "time_var", "freq_var")}
    rel, mask = xai.ground_truth_mask(p["mag_real"], p["mag_fake"], args.mask_quantile, args.eps, **kernel)
    pred_real, pred_fake = predict(model, x_real, bf16), predict(model, x_fake, bf16)
    maps: dict[str, dict[str, torch.Tensor]] = {}
    agree: dict[str, dict[str, Agreement]] = {}
    for tname, target in (("spoof", corpora.LABEL_SPOOF), ("predicted", pred_fake.pred)):
        if tname == "predicted" and target == corpora.LABEL_SPOOF:  # the same maps: no second backward pass
            maps[tname], agree[tname] = maps["spoof"], agree["spoof"]
            continue
        maps[tname] = {
            k: v[:, :valid].cpu() for k, v in xai.attribution_maps(model, x_fake, target, layer, bf16).items()
        }
        agree[tname] = {k: Agreement(**xai.agreement(v, mask, args.map_quantile)) for k, v in maps[tname].items()}
    floor = xai.random_floor(mask, args.random_seeds, args.map_quantile)
    sanity, cascade, stages, maps_random = xai.sanity_check(
        model, x_fake, corpora.LABEL_SPOOF, layer, maps["spoof"], args.reinit_seeds, valid, bf16,
        cascade_seed=1000 if args.cascade else None,
    )  # fmt: skip
    faith = (
        faithfulness(model, x_real, x_fake, maps["spoof"], rel, valid, spec.pair_id, args, bf16)
        if args.faith_ks
        else None
    )
    top = {k: xai.binarise_top(maps["spoof"][k], args.map_quantile) for k in ("gradcam", "ixg_abs")}
    x_valid = x_fake[0, 0, :, :valid].cpu()
    result = PairResult(
        pair_id=spec.pair_id, name=spec.name, vocoder=spec.vocoder, source=spec.source, speaker=spec.speaker,
        align=spec.align, lag=p["lag"], lag_estimate=p["lag_estimate"], envelope_corr=p["envelope_corr"],
        start_s=p["start_s"], seconds=p["seconds"], frames=valid, mask_pixels=int(mask.sum()),
        mask_quantile=args.mask_quantile, mask_kernel=kernel, pred_real=pred_real, pred_fake=pred_fake,
        agreement=agree, floor=Agreement(**{k: v["mean"] for k, v in floor.items()}),
        floor_std=Agreement(**{k: v["std"] for k, v in floor.items()}),
        sanity=sanity, cascade_stages=stages, cascade=cascade, faithfulness=faith,
        level_profile={"mask": xai.level_profile(mask, p["mag_real"]),
                       **{k: xai.level_profile(top[k], p["mag_real"]) for k in top}},
        vs_input={k: xai.spearman(maps["spoof"][k], x_valid) for k in ("gradcam", "ixg_abs")},
        between_maps={"spearman": xai.spearman(maps["spoof"]["gradcam"], maps["spoof"]["ixg_abs"]),
                      "iou_top": float((top["gradcam"] & top["ixg_abs"]).sum() / (top["gradcam"] | top["ixg_abs"]).sum())},
        compute_s=round(time.monotonic() - t0, 3),
    )  # fmt: skip
    return result, PairMaps(p["mag_real"], p["mag_fake"], rel, mask, maps, maps_random)


# ----------------------------------------------------------------------------- the run: many pairs, resumable

SETTING_KEYS = ("mask_quantile", "time_size", "freq_size", "time_var", "freq_var", "eps", "map_quantile",
                "random_seeds", "reinit_seeds", "cascade", "faith_ks", "start_s", "align", "max_lag_s")  # fmt: skip


def run_settings(info: ModelInfo, layer_name: str, args) -> dict:
    """What a pair's numbers depend on: a rerun into the same --out with other settings is refused."""
    return {"checkpoint_sha256": info.sha256, "random_model_seed": None if info.trained else args.seed,
            "frontend": info.frontend, "num_frames": info.num_frames, "pad": info.pad, "bf16": info.bf16,
            "layer": layer_name, "measures": 2, **{k: getattr(args, k) for k in SETTING_KEYS}}  # fmt: skip


def finished_pairs(pairs_dir: Path, specs: list[PairSpec]) -> set[str]:
    """The pair ids whose result file reads back; a file that does not (empty, {}, [], truncated) is named and will
    be explained again."""
    done = set()
    for spec in specs:
        path = pairs_dir / f"{spec.pair_id}.json"
        if path.is_file():
            try:
                report.read_pair(path)
            except ValueError as e:
                print(f"{e}: explaining that pair again", file=sys.stderr)
                continue
            done.add(spec.pair_id)
    return done


def explain_pairs(specs: list[PairSpec], model, frontend, info: ModelInfo, layer, layer_name: str, args, out: Path):
    """Explain every pair, writing each result as it finishes; pairs already in `out/pairs` are skipped.

    A pair that fails (unreadable audio, not a pair, an optional vocoder missing, ...) is named, listed in
    out/failed.json and skipped; the run goes on (`main` then exits 1 unless --skip-bad). A single pair's failure
    is raised, and so is a model that gives non-finite logits (every pair would fail). Returns (the results of all
    `specs` present in out/pairs, in order; the failures).
    """
    pairs_dir = out / "pairs"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    settings = run_settings(info, layer_name, args)
    run_file = out / "run.json"
    remedy = f"delete it and {pairs_dir}, or choose another --out"  # damaged, or written with other settings
    old = cli.read_json_object(run_file, "the settings file explain.py writes", remedy)
    if old is not None:
        cli.check_same_settings(run_file, old, settings, remedy)
    with cli.atomic_write(run_file) as f:
        json.dump(settings, f, indent=1)
    done = finished_pairs(pairs_dir, specs)
    todo = [s for s in specs if s.pair_id not in done]
    if len(todo) < len(specs):
        print(f"resuming {out}: {len(specs) - len(todo):,} of {len(specs):,} pairs already explained, "
              f"{len(todo):,} to go")  # fmt: skip
    figure_ids = {s.pair_id for s in specs[: args.figures]}
    bar = cli.Progress(len(todo), "explain", unit="pairs", every=0 if len(todo) <= 20 else 10.0)
    failed = []
    for spec in todo:
        try:
            res, pm = explain_pair(spec, model, frontend, info, layer, args)
        except NonFiniteModelError as e:
            raise NonFiniteModelError(f"--ckpt {info.ckpt or 'random model'}, pair {spec.pair_id}: {e}") from None
        except (RuntimeError, ValueError, FileNotFoundError, OSError) as e:
            if len(specs) == 1:  # one pair asked for: its error is the run's (one line), nothing to go on with
                raise
            failed.append({"pair": spec.pair_id, "real": spec.real, "error": str(e)})
            print(f"pair {spec.pair_id} failed, skipped: {e}", file=sys.stderr)
            bar.update(1)
            continue
        with cli.atomic_write(pairs_dir / f"{spec.pair_id}.json") as f:
            f.write(res.to_json())
        if spec.pair_id in figure_ids:
            report.plot_pair(out / f"pair_{spec.pair_id}.png", res, pm, frontend)
            report.plot_maps(out / f"maps_{spec.pair_id}.png", res, pm, frontend, args.map_quantile)
            if pm.maps_random:  # (--reinit-seeds 0: no full re-initialisation, no figure)
                report.plot_sanity(out / f"sanity_{spec.pair_id}.png", res, pm, frontend)
        lag = f"lag {res.lag:+d}" + (f" (estimate {res.lag_estimate:+d})" if res.align == "start" else "")
        bar.update(1, extra=f"  {spec.pair_id}: {lag}; P(bona fide) real {res.pred_real.p_bonafide:.2f}, vocoded "
                            f"{res.pred_fake.p_bonafide:.2f}; {res.compute_s:.1f} s")  # fmt: skip
    bar.close()
    with cli.atomic_write(out / "failed.json") as f:
        json.dump(failed, f, indent=1)
    results = [report.read_pair(pairs_dir / f"{s.pair_id}.json")
               for s in specs if (pairs_dir / f"{s.pair_id}.json").is_file()]  # fmt: skip
    return results, failed


# ----------------------------------------------------------------------------- flags


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="Pair sources: exactly one of --utt, --real, --split, --real-dir, or --vocv4-root "
                                   "alone. Defaults marked 'auto' are decided in resolve_defaults.")  # fmt: skip
    g = p.add_argument_group("pairs")
    g.add_argument("--utt", help="one ASVspoof 2019 LA utterance (any split under --data-root), e.g. LA_T_4179989")
    g.add_argument("--real", help="one bona fide audio file")
    g.add_argument("--fake", nargs="+", default=[], help="vocoded copies of --real (any number)")
    g.add_argument("--split", choices=corpora.SPLITS, help="every bona fide file of this LA split (with --vocode)")
    g.add_argument("--real-dir", help="every .flac/.wav under this folder as a bona fide recording (with --vocode)")
    g.add_argument("--vocv4-root", help="extracted vocv4 voc.v4 folder (protocol.txt, wav/): with --utt its copies of "
                                        "that utterance, alone every pair it holds")  # fmt: skip
    g.add_argument("--vocoders", nargs="+", default=None,
                   help="vocv4 vocoders to use (auto: hifigan waveglow with --utt, all alone)")  # fmt: skip
    g.add_argument("--vocode", nargs="*", choices=sorted(vocoders.VOCODERS), default=None,
                   help="local vocoders making the fake side (auto: griffinlim melgl when no vocv4 / --fake; "
                        "world and mlsa need pyworld / pysptk)")  # fmt: skip
    g.add_argument("--speakers", nargs="+", help="only these speakers (LA_0079 ...; from the protocol or file names)")
    g.add_argument("--limit", type=int, default=0, help="only the first N bona fide recordings (0: all)")
    g.add_argument("--max-lag-s", type=float, default=0.1, help="largest offset searched by cross-correlation (s)")
    g.add_argument("--align", choices=xai.ALIGN_METHODS, default="envelope",
                   help="how local copies and --fake files are aligned: cross-correlate 10 ms RMS envelopes (robust to "
                        "re-synthesised phase) or raw waveforms, or 'start' (known to start with the real: lag 0, "
                        "end trimmed). vocv4 copies are always 'start'")  # fmt: skip
    g.add_argument("--start-s", type=float, default=0.0, help="start of the model's input window in the pair (s)")
    g = p.add_argument_group("model, attributions, sanity, faithfulness")
    g.add_argument("--ckpt", help="train.py checkpoint (default: the newest runs/*/best.pt)")
    g.add_argument("--random-model", action="store_true", help="explain a randomly initialised LCNN (a baseline)")
    g.add_argument("--layer", default="features.mfm27",
                   help="Grad-CAM layer (default features.mfm27: the last MFM, before the last max-pool)")  # fmt: skip
    g.add_argument("--reinit-seeds", type=int, default=5,
                   help="models with every layer re-initialised at once in the sanity check")  # fmt: skip
    g.add_argument(
        "--cascade",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the cascading randomisation, top layer first (11 more backward passes a pair)",
    )
    g.add_argument("--random-seeds", type=int, default=20, help="random maps averaged for the floor")
    g.add_argument("--map-quantile", type=float, default=0.95, help="maps binarised above this quantile (top 5 %%)")
    g.add_argument("--faith-ks", nargs="*", type=float, default=list(xai.FAITH_KS),
                   help="faithfulness: %% of pixels swapped, increasing (default 2.5 5 ... 20, uniform steps; none: no "
                        "faithfulness test)")  # fmt: skip
    g = p.add_argument_group("ground-truth mask (Eq. 2 of arXiv:2506.03425; Gaussian of a published reproduction)")
    g.add_argument("--mask-quantile", type=float, default=xai.MASK_DEFAULTS["quantile"], help="paper: 0.95 (top 5 %%)")
    g.add_argument(
        "--time-size",
        type=int,
        default=None,
        help="Gaussian taps in time (auto: the reproduction's 48 ms on the model's hop, xai.mask_kernel)",
    )
    g.add_argument("--freq-size", type=int, default=None, help="Gaussian taps in frequency (auto: its 172 Hz)")
    g.add_argument("--time-var", type=float, default=None, help="variance in frames^2 (auto: scaled from 3)")
    g.add_argument("--freq-var", type=float, default=None, help="variance in bins^2 (auto: scaled from 5)")
    g.add_argument("--eps", type=float, default=xai.MASK_DEFAULTS["eps"], help="denominator floor (1e-8)")
    p.add_argument("--out", help="output folder (auto: explain_out/<utt, file, split or folder>/)")
    p.add_argument("--figures", type=int, default=3, help="draw pair/maps/sanity figures of the first N pairs")
    # --batch-size / --num-workers come with the shared flags but mean nothing here (one pair at a time, in this
    # process): hidden, and refused by check_flags when given
    cli.add_common_args(p, hidden=("batch_size", "num_workers"))
    data.add_input_args(p)
    model_lib.add_model_args(p)
    p.set_defaults(frontend=None, num_frames=None, pad=None)  # None: as the checkpoint says
    return p


def check_flags(args) -> None:
    """Impossible or contradictory flags stop the run before any work, naming the flag. Reads, never changes."""
    pair_source(args)
    for flag in ("batch_size", "num_workers"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag.replace('_', '-')}: explain.py explains one pair at a time in this process (no "
                             "batches of files, no loader workers); drop the flag")  # fmt: skip
    if args.fake and not args.real:
        raise ValueError("--fake goes with --real (use --vocv4-root or --vocode with --utt)")
    if args.vocv4_root and (args.real or args.split or args.real_dir):
        raise ValueError("--vocv4-root pairs vocoded files with their LA original by utterance id: use it with --utt "
                         "or alone")  # fmt: skip
    if args.ckpt and args.random_model:
        raise ValueError("--random-model explains an untrained LCNN: give it or --ckpt, not both")
    for flag in ("mask_quantile", "map_quantile"):
        if not 0.0 <= getattr(args, flag) < 1.0:
            raise ValueError(f"--{flag.replace('_', '-')} must be in [0, 1), got {getattr(args, flag)}")
    for flag, low in (("reinit_seeds", 0), ("random_seeds", 1), ("limit", 0), ("figures", 0)):
        if getattr(args, flag) < low:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least {low}, got {getattr(args, flag)}")
    if any(not 0 < k <= 100 for k in args.faith_ks) or any(b <= a for a, b in zip(args.faith_ks, args.faith_ks[1:])):
        raise ValueError(f"--faith-ks must be increasing percentages in (0, 100], got {args.faith_ks}")
    if args.max_lag_s < 0 or args.start_s < 0:
        raise ValueError("--max-lag-s and --start-s must be 0 or more")
    for flag in ("time_size", "freq_size"):
        value = getattr(args, flag)
        if value is not None and (value < 1 or value % 2 == 0):
            raise ValueError(f"--{flag.replace('_', '-')} must be an odd number of taps, got {value}")
    for flag in ("time_var", "freq_var", "eps"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {value}")


def resolve_defaults(args, info: ModelInfo, frontend) -> argparse.Namespace:
    """Every default that depends on other flags or on the model, decided here and only here; returns a new
    namespace (args is not changed):

      --data-root   the tree the checkpoint was trained on, when not given
      --vocode      griffinlim melgl, unless vocv4 or --fake files give the fake side
      --vocoders    hifigan waveglow with --utt; every vocoder vocv4 lists when --vocv4-root is alone
      --time-size, --freq-size, --time-var, --freq-var   the reproduction's Gaussian at the same extent in seconds
                    and hertz on the model's grid (`xai.mask_kernel`)
      --out         explain_out/<utt id, --real stem, SPLIT_bonafide, --real-dir name, or vocv4>
    """
    r = argparse.Namespace(**vars(args))
    source = pair_source(args)
    if args.data_root is None and info.data_root is not None and source in ("utt", "split", "vocv4_root"):
        print(f"--data-root not given ($ASVSPOOF_ROOT unset): the tree the model was trained on, {info.data_root}")
        r.data_root = info.data_root
    if r.data_root is None and source in ("utt", "split", "vocv4_root"):
        raise ValueError(
            "give --data-root (the LA tree), or explain a checkpoint that names the tree it was trained on"
        )
    if args.vocode is None:
        r.vocode = [] if (args.fake or args.vocv4_root) else ["griffinlim", "melgl"]
    if args.vocoders is None and source == "utt":
        r.vocoders = ["hifigan", "waveglow"]
    bin_hz = float(np.median(np.diff(frontend.bin_frequencies())))
    for k, v in xai.mask_kernel(frontend.hop_length / frontend.sample_rate, bin_hz).items():
        if getattr(args, k) is None:
            setattr(r, k, v)
    if args.out is None:
        stem = {"utt": args.utt, "real": Path(args.real or ".").stem, "split": f"{args.split}_bonafide",
                "real_dir": Path(args.real_dir or ".").name, "vocv4_root": "vocv4"}[source]  # fmt: skip
        r.out = str(Path("explain_out") / stem)
    return r


def main(argv: list[str] | None = None) -> int:
    given = build_parser().parse_args(argv)
    check_flags(given)
    device = cli.resolve_device(given.device)
    model_lib.configure_backend(device)
    model, info = load_model(given, device)
    frontend = data.make_frontend(info.frontend).to(device)
    args = resolve_defaults(given, info, frontend)
    layer = xai.find_layer(model, args.layer)
    layer_name = next(n for n, m in model.named_modules() if m is layer)
    specs = collect_pairs(args)
    out = cli.check_output_path(Path(args.out), "--out", folder=True)
    print(f"{len(specs):,} pair(s): {len({s.name for s in specs}):,} bona fide recording(s) x "
          f"{', '.join(dict.fromkeys(s.vocoder for s in specs)) if len(specs) < 50 else 'vocoders'}; output {out}")  # fmt: skip
    results, failed = explain_pairs(specs, model, frontend, info, layer, layer_name, args, out)
    if not results:
        raise RuntimeError(f"no pair could be explained ({len(failed)} failed; first: {failed[0]['pair']}: "
                           f"{failed[0]['error']})")  # fmt: skip
    summary = report.summarise_pairs(results)
    k = {n: getattr(args, n) for n in ("time_size", "freq_size", "time_var", "freq_var")}
    summary.update(model=dataclasses.asdict(info), layer=layer_name, settings=run_settings(info, layer_name, args),
                   failed=failed, mask={"equation": "Eq. 2 of arXiv:2506.03425",
                   "gaussian_source": "published reproduction make_masks_min_asv19orig.py (3 x 11 px, variances 3 "
                                      "and 5, on a Hann 1024 / 256 grid)",
                   "grid": f"{info.frontend} front-end of the model (magnitude = sqrt of power); the Gaussian scaled "
                           f"to the same seconds and hertz: {k}", "top": "exactly round((1 - quantile) N) pixels, "
                           "ties in a fixed pseudo-random order"},
                   seconds_per_pair=report.bootstrap_ci([r.compute_s for r in results]))  # fmt: skip
    with cli.atomic_write(out / "summary.json") as f:  # a killed run never leaves half a summary
        f.write(json.dumps(report.finite_or_none(summary), indent=1, allow_nan=False) + "\n")
    report.plot_agreement_summary(out / "summary_agreement.png", results, summary)
    report.plot_faithfulness_summary(out / "summary_faithfulness.png", summary)
    report.plot_sanity_summary(out / "summary_sanity.png", summary)
    print()
    print(report.format_summary(summary))
    if not info.trained:
        print("WARNING: the model is randomly initialised: these maps explain nothing.", file=sys.stderr)
    print(f"{len(results):,} pair(s) in {out}/pairs; summary.json, summary_agreement.png, summary_faithfulness.png, "
          f"summary_sanity.png; {summary['seconds_per_pair']['mean']:.1f} s a pair")  # fmt: skip
    if failed:  # the summary covers the others; the exit status says that some were left out (the bad-file policy)
        text = (f"{len(failed)} pair(s) failed and were skipped (listed in {out / 'failed.json'}); first: "
                f"{failed[0]['pair']}: {failed[0]['error']}")  # fmt: skip
        if not args.skip_bad:
            print(f"error: {text}; pass --skip-bad to accept a run without them", file=sys.stderr)
            return 1
        print(text, file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run_cli(main)
