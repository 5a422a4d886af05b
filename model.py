"""model.py -- the STC LightCNN (LCNN) countermeasure and its A-softmax head.

LCNN of Lavrentyeva et al., "STC Antispoofing Systems for the ASVspoof2019 Challenge", Interspeech 2019
(arXiv:1904.05576), Table 1 (the LA system). MFM = Max-Feature-Map (Wu et al., "A Light CNN for Deep Face
Representation with Noisy Labels", 2018): split the channels in two halves and keep the element-wise max.

    layer      type       kernel / stride   filters      output (for a 863 x 600 log-power STFT)
    conv1      Conv       5x5 / 1x1          64           64 x 863 x 600
    mfm2       MFM        -                  32           32 x 863 x 600
    pool3      MaxPool    2x2 / 2x2          -            32 x 431 x 300
    conv4      Conv       1x1 / 1x1          64           64 x 431 x 300
    mfm5       MFM        -                  32           32 x 431 x 300
    bn6        BatchNorm  -                  -            32 x 431 x 300
    conv7      Conv       3x3 / 1x1          96           96 x 431 x 300
    mfm8       MFM        -                  48           48 x 431 x 300
    pool9      MaxPool    2x2 / 2x2          -            48 x 215 x 150
    bn10       BatchNorm  -                  -            48 x 215 x 150
    conv11     Conv       1x1 / 1x1          96           96 x 215 x 150
    mfm12      MFM        -                  48           48 x 215 x 150
    bn13       BatchNorm  -                  -            48 x 215 x 150
    conv14     Conv       3x3 / 1x1         128          128 x 215 x 150
    mfm15      MFM        -                  64           64 x 215 x 150
    pool16     MaxPool    2x2 / 2x2          -            64 x 107 x 75
    conv17     Conv       1x1 / 1x1         128          128 x 107 x 75
    mfm18      MFM        -                  64           64 x 107 x 75
    bn19       BatchNorm  -                  -            64 x 107 x 75
    conv20     Conv       3x3 / 1x1          64           64 x 107 x 75
    mfm21      MFM        -                  32           32 x 107 x 75
    bn22       BatchNorm  -                  -            32 x 107 x 75
    conv23     Conv       1x1 / 1x1          64           64 x 107 x 75
    mfm24      MFM        -                  32           32 x 107 x 75
    bn25       BatchNorm  -                  -            32 x 107 x 75
    conv26     Conv       3x3 / 1x1          64           64 x 107 x 75
    mfm27      MFM        -                  32           32 x 107 x 75
    pool28     MaxPool    2x2 / 2x2          -            32 x 53 x 37
    fc29       FC         -                 160          160            (62,752 inputs: ~10.0 M of 10.2 M weights)
    mfm30      MFM        -                  80           80
    dropout    Dropout    p = 0.75 (STC recipe; 0.1 in the seed recipe)
    bn31       BatchNorm  -                  -            80
    fc32       FC         -                   2            2 logits [spoof, bona fide]

Deviations from the table, all deliberate: the paper does not say where its dropout sits, we put it between
mfm30 and bn31 (the project's brief); convolutions keep their bias (as NII's project-NN LCNN does); the input
size is free -- the FC input follows from (in_bins, num_frames), so the 20-band mel front-end works too.

Loss: plain cross-entropy on the two logits by default (Wang & Yamagishi, "A Comparative Study on Recent Neural
Spoofing Countermeasures for Synthetic Speech Detection", Interspeech 2021: the NII study found it as good as
the margin losses). `head="asoftmax"` swaps fc32 for the A-softmax layer the STC paper used (SphereFace,
Liu et al., CVPR 2017); cross-entropy on its margin logits *is* the A-softmax loss (see `AngleLinear`).
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cli import first_line
from data import PADS

# The bona fide score (logit_bona - logit_spoof, higher = bona fide) is owned by metrics.py, beside the EER and t-DCF
# that assume its polarity; re-exported here for the scripts. metrics.py imports only numpy.
from metrics import bonafide_score  # noqa: F401

HEADS = ("linear", "asoftmax")


# ----------------------------------------------------------------------------- building blocks


class _MaxFeatureMap(torch.autograd.Function):
    """MFM with a backward pass that costs one bool mask instead of both inputs.

    `torch.maximum`'s own backward keeps both halves and splits the gradient at ties through where / masked_fill /
    division: on a 2-core CPU that was 42 % of an STC training step (torch.profiler, batch 4 of 863 x 600). Here
    the forward keeps only `a >= b` (1 byte per output element, an eighth of the input's float32 bytes) and the
    backward routes the whole gradient to the larger half (to the first half at a tie, where torch.maximum would
    give each half one half of it; ties between two float convolution outputs are measure-zero events).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        ctx.save_for_backward(a >= b)
        return torch.maximum(a, b)  # NaN propagates as in the plain op

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (first,) = ctx.saved_tensors  # (B, C, ...) bool
        shape = (grad.shape[0], 2 * grad.shape[1], *grad.shape[2:])
        cl = grad.dim() == 4 and not grad.is_contiguous() and grad.is_contiguous(memory_format=torch.channels_last)
        out = torch.empty(shape, dtype=grad.dtype, device=grad.device,
                          memory_format=torch.channels_last if cl else torch.contiguous_format)  # fmt: skip
        grad_a, grad_b = out.chunk(2, dim=1)
        torch.mul(grad, first, out=grad_a)
        torch.sub(grad, grad_a, out=grad_b)  # grad where b won, 0 where a did (one pass, no second mask)
        return out


class MFM(nn.Module):
    """Max-Feature-Map: (B, 2C, ...) -> (B, C, ...), the max of the first and the second half of the channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2:
            raise ValueError(f"MFM needs an even number of channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxFeatureMap.apply(x)
        a, b = x.chunk(2, dim=1)
        return torch.maximum(a, b)


class AngleLinear(nn.Module):
    """A-softmax output layer (SphereFace, Liu et al., CVPR 2017; NII project-NN's `a_softmax.py`).

    Scoring logits are ||x|| cos(theta_j), theta_j the angle between x and the unit-norm class weight w_j, with no
    margin. Given the labels, the logit of the target class y only is replaced by ||x|| psi(theta_y), where
    psi(theta) = (-1)^k cos(m theta) - 2k on [k pi/m, (k+1) pi/m] (monotonic, psi <= cos); cross-entropy of those
    logits is the A-softmax loss. SphereFace anneals the margin in: the target logit is
    ||x|| (lamb cos + psi) / (1 + lamb), lamb falling from 1500 to 5 (`asoftmax_lambda`).

    Args:
        in_features: embedding size (80 for the LCNN).
        out_features: number of classes.
        margin: integer angular margin m (1..4; SphereFace and NII use 4).
    """

    # cos(m theta) as a polynomial of cos(theta) (Chebyshev polynomials of the first kind)
    COS_M = {
        1: lambda c: c,
        2: lambda c: 2 * c**2 - 1,
        3: lambda c: 4 * c**3 - 3 * c,
        4: lambda c: 8 * c**4 - 8 * c**2 + 1,
    }

    def __init__(self, in_features: int, out_features: int = 2, margin: int = 4):
        super().__init__()
        if margin not in self.COS_M:
            raise ValueError(f"A-softmax margin must be one of {sorted(self.COS_M)}, got {margin!r}")
        self.in_features, self.out_features, self.margin = in_features, out_features, margin
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, lamb: float = 0.0) -> torch.Tensor:
        """(B, D) embeddings -> (B, C) float32 logits; margin logits on the target class when `labels` (B,) is given.

        The whole head runs in float32 with autocast off: F.linear is an autocast op, so under bf16 autocast the
        cosines would come back in bf16 (an 8-bit mantissa: margin logits ~0.05 off fp32 on the CPU), and
        cos(m theta) of a bf16 cosine amplifies that error up to m^2 times (the slope of the Chebyshev polynomial).
        """
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            norm = x.norm(dim=1, keepdim=True)  # (B, 1)
            cos = F.linear(F.normalize(x, dim=1), F.normalize(self.weight.float(), dim=1)).clamp(-1, 1)  # (B, C)
            if labels is None:
                return norm * cos
            cos_y = cos.gather(1, labels.view(-1, 1))  # (B, 1)
            with torch.no_grad():
                k = torch.floor(self.margin * torch.acos(cos_y) / math.pi)  # which [k pi/m, (k+1) pi/m] theta is in
            psi_y = (1 - 2 * (k % 2)) * self.COS_M[self.margin](cos_y) - 2 * k  # (-1)^k cos(m theta) - 2k
            target = norm * (lamb * cos_y + psi_y) / (1 + lamb)
            return (norm * cos).scatter(1, labels.view(-1, 1), target)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, margin={self.margin}"


def asoftmax_lambda(step: int, lambda_max: float = 1500.0, lambda_min: float = 5.0) -> float:
    """SphereFace / NII annealing of the A-softmax margin: max(5, 1500 / (1 + 0.1 step)) at optimiser step `step`."""
    return max(lambda_min, lambda_max / (1 + 0.1 * step))


# ----------------------------------------------------------------------------- the LCNN


LCNN_ARGS = ("in_bins", "num_frames", "dropout", "head", "margin")  # the constructor's arguments = model_args' keys
MARGINS = (1, 2, 3, 4)  # A-softmax angular margins with a cos(m theta) polynomial (AngleLinear.COS_M)


def check_lcnn_args(values: dict, name: Callable[[str], str] = str) -> dict:
    """The rules of the LCNN's arguments, one owner for the constructor, a checkpoint's model_args and train.py's flags.

    in_bins and num_frames: whole numbers of at least 16 (four 2x2 max-pools); dropout in [0, 1); head one of HEADS;
    margin one of MARGINS. Only the keys present are checked.

    Args:
        values: some of LCNN_ARGS -> value.
        name: how the caller's user knows a key (e.g. "--num-frames", "ckpt.pt: stored model_args['num_frames']").

    Raises:
        ValueError: unknown keys, or the first value that breaks a rule, named by `name`.
    """
    unknown = sorted(map(str, set(values) - set(LCNN_ARGS)))
    if unknown:
        raise ValueError(
            f"unknown LCNN argument(s) {', '.join(unknown)}; expected some of {', '.join(sorted(LCNN_ARGS))}"
        )
    rules = {
        "in_bins": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 16,
                    "at least 16 (four 2x2 max-pools), a whole number"),
        "num_frames": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 16,
                       "at least 16 (four 2x2 max-pools), a whole number"),
        "dropout": (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1, "a number in [0, 1)"),
        "head": (lambda v: v in HEADS, f"one of {', '.join(HEADS)}"),
        "margin": (lambda v: v in MARGINS and not isinstance(v, bool), "1, 2, 3 or 4 (the A-softmax angular margin)"),
    }  # fmt: skip
    for key, value in values.items():
        ok, expected = rules[key]
        if not ok(value):
            raise ValueError(f"{name(key)} must be {expected}, got {value!r}")
    return values


def fc29_inputs(in_bins: int, num_frames: int) -> int:
    """Inputs of fc29: 32 maps of (in_bins / 16) x (num_frames / 16) after four 2x2 max-pools (floor at each pool
    equals the floor of the whole division). The one formula behind LCNN.feature_shape and the checkpoint check."""
    return 32 * (in_bins // 16) * (num_frames // 16)


def conv_mfm(name: str, in_ch: int, filters: int, kernel: int) -> list[tuple[str, nn.Module]]:
    """Conv (kernel x kernel, 'same' padding, `filters` maps) -> MFM (filters / 2 maps), named as in Table 1."""
    number = int(name.removeprefix("conv"))
    return [(name, nn.Conv2d(in_ch, filters, kernel, padding=kernel // 2)), (f"mfm{number + 1}", MFM())]


class LCNN(nn.Module):
    """The STC LightCNN (Table 1 of arXiv:1904.05576; layer table in the module docstring).

    Args:
        in_bins: frequency bins F of the input (863 for the STC STFT, 20 for the seed recipe's mel).
        num_frames: frames T of the input (600 in both recipes).
        dropout: dropout probability before bn31 (0.75 STC, 0.1 seed).
        head: "linear" (fc32, cross-entropy) or "asoftmax" (AngleLinear, A-softmax loss).
        margin: A-softmax margin m (ignored by the linear head).

    Named parts, for Grad-CAM and friends: `model.features` (conv1 ... pool28, an nn.Sequential whose children
    are named as the table's rows, e.g. `model.features.mfm27` is the last MFM before the last max-pool) and
    `model.classifier` (fc29 ... fc32).
    """

    def __init__(
        self, in_bins: int = 863, num_frames: int = 600, dropout: float = 0.75, head: str = "linear", margin: int = 4
    ):
        super().__init__()
        check_lcnn_args(dict(in_bins=in_bins, num_frames=num_frames, dropout=dropout, head=head, margin=margin))
        self.in_bins, self.num_frames, self.dropout, self.head, self.margin = in_bins, num_frames, dropout, head, margin
        pool = lambda: nn.MaxPool2d(2, 2)  # noqa: E731
        self.features = nn.Sequential(OrderedDict([
            *conv_mfm("conv1", 1, 64, 5),    ("pool3", pool()),
            *conv_mfm("conv4", 32, 64, 1),   ("bn6", nn.BatchNorm2d(32)),
            *conv_mfm("conv7", 32, 96, 3),   ("pool9", pool()), ("bn10", nn.BatchNorm2d(48)),
            *conv_mfm("conv11", 48, 96, 1),  ("bn13", nn.BatchNorm2d(48)),
            *conv_mfm("conv14", 48, 128, 3), ("pool16", pool()),
            *conv_mfm("conv17", 64, 128, 1), ("bn19", nn.BatchNorm2d(64)),
            *conv_mfm("conv20", 64, 64, 3),  ("bn22", nn.BatchNorm2d(32)),
            *conv_mfm("conv23", 32, 64, 1),  ("bn25", nn.BatchNorm2d(32)),
            *conv_mfm("conv26", 32, 64, 3),  ("pool28", pool()),
        ]))  # fmt: skip
        self.classifier = nn.Sequential(OrderedDict([
            ("fc29", nn.Linear(fc29_inputs(self.in_bins, self.num_frames), 160)),
            ("mfm30", MFM()),
            ("dropout", nn.Dropout(dropout)),
            ("bn31", nn.BatchNorm1d(80)),
            ("fc32", nn.Linear(80, 2) if head == "linear" else AngleLinear(80, 2, margin)),
        ]))  # fmt: skip

    def feature_shape(self) -> tuple[int, int, int]:
        """(C, H, W) that `features` makes of a (1, in_bins, num_frames) input: 'same' convs, four 2x2 max-pools."""
        return 32, self.in_bins // 16, self.num_frames // 16  # fc29_inputs is their product

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, lamb: float = 0.0) -> torch.Tensor:
        """Score a batch of features.

        Args:
            x: (B, 1, F, T) features, F = in_bins, T = num_frames.
            labels: (B,) targets; only the A-softmax head uses them (margin logits for its loss).
            lamb: A-softmax margin annealing (`asoftmax_lambda`); 0 = full margin.
        Returns:
            (B, 2) logits [spoof, bona fide]; score = `bonafide_score(logits)`, higher = bona fide.
        """
        if x.dim() != 4 or x.shape[1:] != (1, self.in_bins, self.num_frames):
            raise ValueError(
                f"LCNN expects (B, 1, {self.in_bins}, {self.num_frames}) features, got {tuple(x.shape)}: "
                "check --frontend / --num-frames against the checkpoint"
            )
        h = self.features(x)  # (B, 32, F/16, T/16)
        h = torch.flatten(h, 1)  # (B, 32 * F/16 * T/16)
        for name, layer in self.classifier.named_children():
            if name == "fc32" and self.head == "asoftmax":
                return layer(h, labels, lamb)  # (B, 2)
            h = layer(h)
        return h  # (B, 2)

    def model_args(self) -> dict:
        """Constructor arguments as a plain dict (stored in checkpoints, read by `build_model`)."""
        return {key: getattr(self, key) for key in LCNN_ARGS}


def build_model(model_args: dict) -> LCNN:
    """LCNN from a checkpoint's `model_args` dict; unknown keys are an error (a typo must not pass silently)."""
    return LCNN(**check_lcnn_args(model_args))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- running the model: one path for every script

PRECISIONS = ("auto", "fp32", "bf16")


def add_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of every script that runs the model (train, evaluate, explain, bench); rules in model.py."""
    g = parser.add_argument_group("model execution")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: measured on this machine, bf16 only where native (tune.choose_settings; cached)")  # fmt: skip
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: measured, tune.choose_settings)")  # fmt: skip
    return parser


def use_bf16(precision: str, device: torch.device) -> bool:
    """The unmeasured precision rule: `bf16` / `fp32` force it on any device (torch runs bf16 autocast on the CPU
    too); `auto` = bf16 autocast on a CUDA device that supports it, fp32 elsewhere. The scripts settle `auto` by
    measurement (`tune.choose_settings`: this rule's choice is its first candidate, and what LCNN_TUNE=off keeps);
    on the CPU the best choice depends on the chip (bf16 trained 1.65x faster on a 2-core AMD EPYC with
    AVX512-BF16, no faster on an earlier VM without it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def use_channels_last(flag: bool | None, device: torch.device) -> bool:
    """The unmeasured memory-format rule: channels_last unless `--no-channels-last`, on CUDA (cuDNN's fast
    convolutions) and on the CPU, where oneDNN measured 1.2-1.4x (training) and 1.75x (scoring) the NCHW throughput
    of the STC LCNN (bench.py, on two 2-core VMs); off on other devices (MPS), where it was never measured. The
    scripts measure both formats when no flag is given (`tune.choose_settings`; this rule's choice goes first)."""
    if flag is not None:
        return bool(flag)
    return device.type in ("cuda", "cpu")


def featurize(frontend: nn.Module, waves: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, N) waveforms on the model's device -> (B, 1, F, T) float32 features: the front-end runs outside autocast
    (a log of a bf16 power spectrum loses the quiet bins) and without autograd, then takes the model's memory format."""
    with torch.no_grad(), torch.autocast(waves.device.type, enabled=False):
        x = frontend(waves.float())  # (B, 1, F, T)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def classify(model: nn.Module, x: torch.Tensor, bf16: bool, labels: torch.Tensor | None = None, lamb: float = 0.0):
    """(B, 1, F, T) features -> (B, 2) float32 logits [spoof, bona fide], under bf16 autocast when `bf16`.

    `labels` / `lamb` go to the A-softmax head in training (margin logits for its loss); `model` may be a DDP wrapper.
    """
    head = {} if labels is None else {"labels": labels, "lamb": lamb}
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(x, **head)  # (B, 2)
    return logits.float()


def waves_to_logits(model: nn.Module, frontend: nn.Module, waves: torch.Tensor, bf16: bool, channels_last: bool,
                    labels: torch.Tensor | None = None, lamb: float = 0.0) -> torch.Tensor:  # fmt: skip
    """The waveform -> logits step of training, dev scoring, evaluate.py, explain.py and bench.py: `featurize`
    then `classify`. waves (B, N) on any device -> (B, 2) float32 logits on the model's device."""
    device = next(model.parameters()).device
    x = featurize(frontend, waves.to(device, non_blocking=True), channels_last)
    return classify(model, x, bf16, labels, lamb)


# ----------------------------------------------------------------------------- device set-up (each branch one function)


def configure_backend(device: torch.device) -> None:
    """Process-wide settings for a run on `device`.

    CUDA: cuDNN autotuning (every batch has the same shape) and TF32 matmuls/convolutions for fp32 work.
    CPU (Linux, glibc): `tune_cpu_allocator`.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    elif device.type == "cpu":
        tune_cpu_allocator()


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the kernel (glibc `mallopt`; a no-op elsewhere).

    Each LCNN activation of an STC batch is hundreds of MB. glibc serves such blocks with a fresh mmap and unmaps
    them on free, so every layer of every step page-faults its output in again and the kernel zeroes it: on this
    project's 2-core CPU that was as much time as the convolutions. With mmap off for large blocks (M_MMAP_MAX 0),
    no trimming (M_TRIM_THRESHOLD INT_MAX) and one arena (M_ARENA_MAX 1), the blocks are reused: on a 2-core VM an
    STC training step went from 1.2 to 1.8-2.0 samples/s and scoring from 3.7 to 9.5 files/s (bench.py measures it
    in one run). The price: the resident set stays at its peak, and the heap those blocks fragment peaks higher
    than the live set (fp32 training, batch 4: 3.7 GB against 2.9 GB untuned, at twice the speed; README, Speed).
    Returns True when the settings were applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs: leave them alone
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
    _ALLOCATOR_TUNED = all(mallopt(k, v) == 1 for k, v in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1),
                                                            (M_ARENA_MAX, 1)))  # fmt: skip
    return _ALLOCATOR_TUNED


def release_cpu_memory() -> None:
    """Hand the free memory that `tune_cpu_allocator` keeps back to the kernel (glibc `malloc_trim`).

    Call it before forking DataLoader workers: a forked worker shares the parent's pages copy-on-write, so a parent
    holding gigabytes of retained blocks pays a page copy for each one it writes again while the worker lives (an
    STC epoch with 2 workers ran at 0.5 samples/s instead of 1.9, with twice the memory). After the trim, only the
    first step of the epoch faults its pages in again.
    """
    if _ALLOCATOR_TUNED:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def make_adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """The NII study's optimiser: Adam, betas (0.9, 0.999), eps 1e-8. Fused (one kernel for all parameters) on
    CUDA and on the CPU, where torch has the kernel (3.6x faster steps here); the default implementation elsewhere."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, **({"fused": True} if fused else {}))


# ----------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The dict in a train.py checkpoint file, on the CPU; `torch.load(weights_only=True)`, so no pickled code runs.

    Raises:
        FileNotFoundError: no such file. ValueError: one line, when torch cannot read it (truncated, foreign or
            pickled-code file: torch's own multi-line text, which recommends weights_only=False, is not passed on)
            or when it holds something other than a dict.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder: give the .pt file (e.g. {path / 'best.pt'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns in several lines about a foreign pickle protocol first
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, pickled code ...
        raise ValueError(
            f"{path}: not a readable train.py checkpoint ({type(e).__name__} from torch.load(weights_only=True)); "
            "expected a plain dict of tensors and flags, not a truncated, foreign or pickled-code file"
        ) from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: holds a {type(ckpt).__name__}, not a train.py checkpoint (a dict)")
    return ckpt


def check_model_args(model_args, path: Path) -> dict:
    """The checkpoint's `model_args` with their types and values checked (one ValueError naming the file and key)."""
    if not isinstance(model_args, dict):
        raise ValueError(f"{path}: stored model_args is a {type(model_args).__name__}, expected a dict")
    try:
        return check_lcnn_args(model_args, lambda key: f"stored model_args[{key!r}]")
    except ValueError as e:
        raise ValueError(f"{path}: {e}; the checkpoint is damaged or not train.py's") from None


def check_input_flags(ckpt: Checkpoint, frontend: str | None, num_frames: int | None) -> None:
    """The one rule for input flags given with a checkpoint: --frontend and --num-frames must agree with it (its FC
    layer fixes the input); None means "as the checkpoint says". Every script that loads a model calls it.

    Raises:
        ValueError: naming the flag, the checkpoint and what it was trained with.
    """
    if frontend is not None and frontend != ckpt.frontend_name:
        raise ValueError(f"--frontend {frontend}: {ckpt.path} was trained with --frontend {ckpt.frontend_name}")
    if num_frames is not None and num_frames != ckpt.num_frames:
        raise ValueError(
            f"--num-frames {num_frames}: {ckpt.path} was trained on {ckpt.num_frames} frames (its FC layer fixes it)"
        )


def trained_data_root(raw: dict) -> str | None:
    """The LA tree a checkpoint's model was trained on: the absolute path train.py stored, else --data-root as given
    (None when neither is stored). The one rule behind every script's default --data-root."""
    args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
    for value in (raw.get("data_root_abs"), args.get("data_root")):
        if isinstance(value, str) and Path(value).exists():
            return value
    value = args.get("data_root")
    return value if isinstance(value, str) else None


@dataclass
class Checkpoint:
    """A train.py checkpoint rebuilt: the model, the front-end and the input it was trained on.

    Attributes:
        path: the file.
        model: the LCNN in eval mode on the device asked for.
        frontend: the front-end module (built by the caller's `make_frontend`) on that device.
        frontend_name: its --frontend name ("stft", "mel").
        num_frames: frames of one input (the FC layer fixes it).
        pad: how short files were padded in training ("repeat" or "zeros").
        args: the flags the run was trained with (a plain dict).
        raw: the whole checkpoint dict (epoch, best_dev_eer, optimiser state, ...).
    """

    path: Path
    model: LCNN
    frontend: nn.Module
    frontend_name: str
    num_frames: int
    pad: str
    args: dict
    raw: dict = field(repr=False)

    @property
    def num_samples(self) -> int:
        """Waveform length of one input."""
        return self.frontend.num_samples(self.num_frames)

    @property
    def data_root(self) -> str | None:
        """The LA tree the model was trained on (`trained_data_root`)."""
        return trained_data_root(self.raw)

    def describe(self) -> str:
        """One line naming the model: file, recipe, front-end, epoch, dev EER."""
        eer = self.raw.get("best_dev_eer", self.raw.get("dev_eer"))
        eer = f", best dev EER {eer:.2f} %" if isinstance(eer, int | float) else ""
        return (f"{self.path} (recipe {self.args.get('recipe', '?')}, {self.frontend_name} {self.model.in_bins} x "
                f"{self.num_frames}, epoch {self.raw.get('epoch', '?')}{eer})")  # fmt: skip


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", make_frontend: Callable[[str], nn.Module] | None = None
) -> Checkpoint:
    """Rebuild a train.py checkpoint -- the one reader behind evaluate.py, explain.py, bench.py and train.py --resume.

    Args:
        path: the .pt file (a plain dict: "model", "model_args", "args", ...).
        device: where the model (and front-end) go.
        make_frontend: --frontend name -> front-end module (`data.make_frontend`; model.py imports only torch).
            None: the checkpoint's front-end is not built (`Checkpoint.frontend` is None).

    Raises:
        FileNotFoundError: no such file. ValueError: one line naming the file and what is wrong -- unreadable, not a
            train.py checkpoint, stored arguments of the wrong type or value, or weights that do not fit.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "model_args", "args") if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a train.py checkpoint: no {', '.join(missing)} (keys: "
                         f"{', '.join(sorted(map(str, ckpt)))}); expected 'model', 'model_args' and 'args'")  # fmt: skip
    model_args, args = check_model_args(ckpt["model_args"], path), ckpt["args"]
    if not isinstance(args, dict):
        raise ValueError(f"{path}: stored args is a {type(args).__name__}, expected the dict of train.py's flags")
    name, pad = args.get("frontend"), args.get("pad", "repeat")
    if not isinstance(name, str):
        raise ValueError(f"{path}: stored args['frontend'] = {name!r}; expected a --frontend name such as 'stft'")
    if pad not in PADS:
        raise ValueError(f"{path}: stored args['pad'] = {pad!r}; expected one of {', '.join(PADS)}")
    if not isinstance(ckpt["model"], dict):
        raise ValueError(f"{path}: stored model is a {type(ckpt['model']).__name__}, expected a state dict")
    # fc29's weight shape follows from in_bins x num_frames: checked first, so that forged sizes never build an LCNN
    fc = ckpt["model"].get("classifier.fc29.weight")
    need = fc29_inputs(model_args.get("in_bins", 863), model_args.get("num_frames", 600))
    if not isinstance(fc, torch.Tensor) or fc.dim() != 2 or fc.shape[1] != need:
        have = f"{fc.shape[1]:,}" if isinstance(fc, torch.Tensor) and fc.dim() == 2 else "none"
        raise ValueError(f"{path}: stored model_args {model_args} give fc29 {need:,} inputs, but its weights have "
                         f"{have}: the checkpoint is damaged or forged")  # fmt: skip
    model = build_model(model_args)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{path}: the weights do not fit LCNN({model_args}): {first_line(e)}") from None
    frontend = None
    if make_frontend is not None:
        try:
            frontend = make_frontend(name)
        except ValueError as e:
            raise ValueError(f"{path}: stored args['frontend'] = {name!r}: {e}") from None
        if frontend.n_bins != model.in_bins:
            raise ValueError(
                f"{path}: --frontend {name} gives {frontend.n_bins} bins but the model takes {model.in_bins}"
            )
        frontend = frontend.to(device)
    return Checkpoint(path, model.to(device).eval(), frontend, name, model.num_frames, pad, args, ckpt)
