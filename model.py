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

import math
import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("linear", "asoftmax")


# ----------------------------------------------------------------------------- building blocks


class MFM(nn.Module):
    """Max-Feature-Map: (B, 2C, ...) -> (B, C, ...), the max of the first and the second half of the channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2:
            raise ValueError(f"MFM needs an even number of channels, got {x.shape[1]} (shape {tuple(x.shape)})")
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
        """(B, D) embeddings -> (B, C) logits; margin logits on the target class when `labels` (B,) is given."""
        x = x.float()  # angles in float32 even under autocast
        norm = x.norm(dim=1, keepdim=True)  # (B, 1)
        cos = F.linear(F.normalize(x, dim=1), F.normalize(self.weight.float(), dim=1)).clamp(-1, 1)  # (B, C)
        if labels is None:
            return norm * cos
        cos_y = cos.gather(1, labels.view(-1, 1))  # (B, 1)
        with torch.no_grad():
            k = torch.floor(self.margin * torch.acos(cos_y) / math.pi)  # which [k pi/m, (k+1) pi/m] theta lies in
        psi_y = (1 - 2 * (k % 2)) * self.COS_M[self.margin](cos_y) - 2 * k  # (-1)^k cos(m theta) - 2k
        target = norm * (lamb * cos_y + psi_y) / (1 + lamb)
        return (norm * cos).scatter(1, labels.view(-1, 1), target)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, margin={self.margin}"


def asoftmax_lambda(step: int, lambda_max: float = 1500.0, lambda_min: float = 5.0) -> float:
    """SphereFace / NII annealing of the A-softmax margin: max(5, 1500 / (1 + 0.1 step)) at optimiser step `step`."""
    return max(lambda_min, lambda_max / (1 + 0.1 * step))


# ----------------------------------------------------------------------------- the LCNN


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
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if in_bins < 16 or num_frames < 16:
            raise ValueError(
                f"LCNN needs inputs of at least 16 x 16 (four 2x2 max-pools), got {in_bins} x {num_frames}"
            )
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
        channels, height, width = self.feature_shape()
        self.classifier = nn.Sequential(OrderedDict([
            ("fc29", nn.Linear(channels * height * width, 160)),
            ("mfm30", MFM()),
            ("dropout", nn.Dropout(dropout)),
            ("bn31", nn.BatchNorm1d(80)),
            ("fc32", nn.Linear(80, 2) if head == "linear" else AngleLinear(80, 2, margin)),
        ]))  # fmt: skip

    def feature_shape(self) -> tuple[int, int, int]:
        """(C, H, W) that `features` makes of a (1, in_bins, num_frames) input: 'same' convs, four 2x2 max-pools."""
        return 32, self.in_bins // 16, self.num_frames // 16  # floor at each pool == floor of the whole division

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, lamb: float = 0.0) -> torch.Tensor:
        """Score a batch of features.

        Args:
            x: (B, 1, F, T) features, F = in_bins, T = num_frames.
            labels: (B,) targets; only the A-softmax head uses them (margin logits for its loss).
            lamb: A-softmax margin annealing (`asoftmax_lambda`); 0 = full margin.
        Returns:
            (B, 2) logits [spoof, bona fide]; score = logits[:, 1] - logits[:, 0], higher = bona fide.
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
        return {
            "in_bins": self.in_bins, "num_frames": self.num_frames, "dropout": self.dropout,
            "head": self.head, "margin": self.margin,
        }  # fmt: skip


def build_model(model_args: dict) -> LCNN:
    """LCNN from a checkpoint's `model_args` dict; unknown keys are an error (a typo must not pass silently)."""
    known = {"in_bins", "num_frames", "dropout", "head", "margin"}
    unknown = sorted(set(model_args) - known)
    if unknown:
        raise ValueError(f"unknown LCNN argument(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    return LCNN(**model_args)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | os.PathLike):
    """The object in a checkpoint file, on the CPU; `torch.load(weights_only=True)`, so no pickled code runs.

    Callers check the keys they need (`load_checkpoint` the model's, train.py's resume the optimiser's, ...).

    Raises:
        FileNotFoundError: no such file. ValueError: torch cannot read it (truncated or foreign file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, ...
        raise ValueError(f"{path}: cannot read the checkpoint ({e})") from e


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[LCNN, dict]:
    """Load a train.py checkpoint (a plain dict; `torch.load(weights_only=True)`, no pickled code).

    Returns:
        (model in eval mode on `device`, the checkpoint dict: "model", "model_args", "args", "epoch", ...).

    Raises:
        FileNotFoundError: no such file. ValueError: not a train.py checkpoint, or weights that do not fit.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise ValueError(f"{path}: not a train.py checkpoint (expected a dict with 'model' and 'model_args')")
    model = build_model(ckpt["model_args"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit LCNN({ckpt['model_args']}): {e}") from e
    return model.to(device).eval(), ckpt
