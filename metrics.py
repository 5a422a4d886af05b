"""Metrics for ASVspoof 2019 LA: EER, DET curve, min t-DCF, per-attack EER and score files; ASVspoof 2021's revised
t-DCF; ASVspoof 5's minDCF, actDCF and Cllr, score calibration, EER by any metadata column and its score files.

Score polarity, once for the whole project: a HIGHER score means MORE BONA FIDE. The official
ASVspoof code assumes it, and so does every function here; a score that grows with "spoofness"
(e.g. the spoof probability) inverts the DET curve and gives 100 % - EER.

The EER and min t-DCF follow the organisers' `tDCF_python` package (`eval_metrics.py`: DET curve,
EER, ASV error rates at the ASV EER threshold, legacy t-DCF) formula for formula, tie handling
included; the test suite checks them against a transcription of that code. On the baseline eval
scores with the organisers' eval ASV scores they give B01 EER 9.572028 %, min t-DCF 0.235936 and
B02 8.089825 %, 0.211053, exactly what the organisers' Python code prints. (The published results
table rounds the EERs to the same 9.57 / 8.09 % but lists min t-DCF 0.2366 / 0.2116; no variant we
tried reproduces those: accepting the ASV at > instead of >=, using the ASV EER as both ASV rates,
or the dev ASV scores all stay within 1e-4 of 0.2359.)

References:

  T. Kinnunen, K.-A. Lee, H. Delgado, N. Evans, M. Todisco, M. Sahidullah, J. Yamagishi,
  D. A. Reynolds, "t-DCF: a Detection Cost Function for the Tandem Assessment of Spoofing
  Countermeasures and Automatic Speaker Verification", Proc. Odyssey 2018, pp. 312-319.
  ASVspoof 2019: Automatic Speaker Verification Spoofing and Countermeasures Challenge
  Evaluation Plan (the "legacy" t-DCF used to rank ASVspoof 2019 systems).
  T. Kinnunen et al., "Tandem Assessment of Spoofing Countermeasures and Automatic Speaker
  Verification: Fundamentals", IEEE/ACM TASLP 28, 2020 (the revised t-DCF of ASVspoof 2021).
  ASVspoof 5 Evaluation Plan and the organisers' `evaluation-package/calculate_modules.py` (minDCF,
  actDCF, Cllr); the test suite checks ours against a transcription of it.
  N. Brümmer, J. du Preez, "Application-independent evaluation of speaker detection", Computer
  Speech and Language 20, 2006 (Cllr); N. Brümmer, the FoCal toolkit (calibration by prior-weighted
  logistic regression).

Usage:
  python metrics.py --scores scores.txt --data-root /data/LA --split eval [--json] [--det det.png]
  python metrics.py --scores scores.txt --data-root DIR [--corpus NAME] [--subset S] [--by codec] [--by attack] [--json]

Imports only numpy and the standard library (matplotlib lazily, for the DET plot).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from cli import ArgumentParser, atomic_write, check_outputs, existing_file, run_cli, text_lines
from corpora import add_corpus_args, detect_corpus, find_la_root, read_corpus, split_of_utt

KEYS = ("bonafide", "spoof")
ASV_KEYS = ("target", "nontarget", "spoof")
ASV_SCORES_DIR = "ASVspoof2019_LA_asv_scores"
ASV_SCORES_FILE = "ASVspoof2019.LA.asv.{split}.gi.trl.scores.txt"


# --- input checks -------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """Array from a list, numpy array or torch tensor (duck-typed: this file never imports torch)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()  # half/bfloat16 have no numpy dtype; float64 keeps close logits apart
    return np.asarray(x)


def _describe_nonfinite(values: np.ndarray) -> str:
    """'NaN', 'inf' or 'NaN or inf', whichever the non-finite values are."""
    n_nan = int(np.isnan(values).sum())
    if n_nan == values.size:
        return "NaN"
    return "inf" if n_nan == 0 else "NaN or inf"


def _check_finite(scores: np.ndarray, utt_ids: np.ndarray | None = None, source: str = "") -> None:
    """Raise ValueError naming how many scores are NaN/inf and the first one (after `source`, e.g. the file)."""
    bad = ~np.isfinite(scores)
    if bad.any():
        first = int(np.argmax(bad))
        where = utt_ids[first] if utt_ids is not None else f"index {first}"
        raise ValueError(
            f"{source}{int(bad.sum()):,} of {scores.size:,} scores are {_describe_nonfinite(scores[bad])} "
            f"(first: {where}); EER and t-DCF need finite scores"
        )


def _as_scores(x: Any, name: str) -> np.ndarray:
    """1-D, non-empty, finite float64 scores, or ValueError saying which rule was broken."""
    arr = _to_numpy(x)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers, got dtype {arr.dtype}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"no {name}: the EER needs both bona fide and spoof scores")
    _check_finite(arr)
    return arr


def _check_soft(bonafide: np.ndarray, spoof: np.ndarray) -> None:
    """Refuse hard decisions, as the official t-DCF code does (fewer than 3 distinct scores)."""
    n_unique = np.unique(np.concatenate((bonafide, spoof))).size
    if n_unique < 3:
        raise ValueError(
            f"only {n_unique} distinct score(s) among {bonafide.size + spoof.size:,}: EER and t-DCF "
            "need soft scores, not hard decisions (has the model collapsed to a constant output?)"
        )


# --- DET curve and EER --------------------------------------------------------------------------


def compute_det_curve(bonafide_scores: Any, spoof_scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates of a CM over all thresholds, as the ASVspoof 2019 code does.

    The scores are pooled and stably sorted (mergesort), and the threshold steps through the sorted
    list one score at a time: at step i the i lowest scores are rejected. Among tied scores bona
    fide trials sort first, so a tie group is crossed one trial at a time (bona fide first), exactly
    as in the organisers' `compute_det_curve`; the intermediate points of a tie group are not
    reachable by any real threshold, but the official EER/t-DCF are defined on this curve.

    Args:
        bonafide_scores: (N_bona,) CM scores of bona fide trials; higher = more bona fide.
        spoof_scores: (N_spoof,) CM scores of spoofed trials.

    Returns:
        frr: (N + 1,) fraction of bona fide trials rejected (CM miss rate), from 0 up to 1.
        far: (N + 1,) fraction of spoofs accepted (CM false-alarm rate), from 1 down to 0.
        thresholds: (N + 1,) the sorted scores, preceded by min - 0.001 (accept everything);
            a trial is accepted as bona fide when its score is above the threshold.

    Raises:
        ValueError: a class is empty, the scores are not 1-D or contain NaN/inf.
    """
    bona = _as_scores(bonafide_scores, "bona fide scores")
    spoof = _as_scores(spoof_scores, "spoof scores")
    all_scores = np.concatenate((bona, spoof))
    is_bona = np.concatenate((np.ones(bona.size, dtype=bool), np.zeros(spoof.size, dtype=bool)))
    order = np.argsort(all_scores, kind="mergesort")  # stable: the official tie order
    is_bona = is_bona[order]
    bona_rejected = np.cumsum(is_bona)  # integer counts, so the rates match the official bit for bit
    spoof_accepted = spoof.size - (np.arange(1, all_scores.size + 1) - bona_rejected)
    frr = np.concatenate(([0.0], bona_rejected / bona.size))
    far = np.concatenate(([1.0], spoof_accepted / spoof.size))
    thresholds = np.concatenate(([all_scores[order[0]] - 0.001], all_scores[order]))
    return frr, far, thresholds


def compute_eer(bonafide_scores: Any, spoof_scores: Any) -> tuple[float, float]:
    """Equal error rate of a CM, the ASVspoof 2019 way.

    Picks the first point of the DET curve where |FRR - FAR| is smallest and returns the mean of
    the two rates there (not an interpolation).

    Args:
        bonafide_scores: (N_bona,) scores of bona fide trials; higher = more bona fide.
        spoof_scores: (N_spoof,) scores of spoofed trials.

    Returns:
        (eer, threshold): the EER as a fraction in [0, 1] (not a percentage) and its threshold.

    Raises:
        ValueError: as `compute_det_curve`.
    """
    frr, far, thresholds = compute_det_curve(bonafide_scores, spoof_scores)
    i = int(np.argmin(np.abs(frr - far)))
    return float(np.mean((frr[i], far[i]))), float(thresholds[i])


def bonafide_score(logits: Any) -> Any:
    """THE bona fide score of the project: logit_bona - logit_spoof of (..., 2) logits ordered [spoof, bona fide].

    It is the log-odds of bona fide under the softmax, so it ranks trials as softmax(logits)[..., 1] does, without
    the float saturation ties of a probability. Works on numpy arrays and torch tensors alike (model.py, train.py,
    evaluate.py, explain.py and bench.py all call it through `model.bonafide_score`).
    """
    return logits[..., 1] - logits[..., 0]


def get_eer(logits: Any, labels: Any) -> float:
    """EER of a two-class model from its logits (the homework's interface).

    The score is the bona fide log-odds `logits[:, 1] - logits[:, 0]`, which ranks trials exactly
    as the bona fide probability softmax(logits)[:, 1] does but without float saturation ties.
    Never score with the spoof probability: it inverts the curve (the EER becomes about 1 - EER).

    Args:
        logits: (N, 2) logits ordered [spoof, bona fide]; numpy, list or torch tensor.
        labels: (N,) 1 = bona fide, 0 = spoof.

    Returns:
        The EER as a fraction in [0, 1].

    Raises:
        ValueError: shapes do not match, labels are not 0/1, one class is absent, a logit is
            NaN/inf, or there are fewer than 3 distinct scores (hard decisions or a collapsed model).
    """
    logits = _to_numpy(logits)
    labels = _to_numpy(labels)
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ValueError(f"logits must have shape (N, 2) [spoof, bona fide], got {logits.shape}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) to match logits {logits.shape}, got {labels.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 1 (bona fide) or 0 (spoof), got values {np.unique(labels)[:5].tolist()}")
    logits = logits.astype(np.float64)
    bad_rows = ~np.isfinite(logits).all(axis=1)
    if bad_rows.any():
        raise ValueError(
            f"{int(bad_rows.sum()):,} of {logits.shape[0]:,} logit rows are "
            f"{_describe_nonfinite(logits[~np.isfinite(logits)])} (first: row {int(np.argmax(bad_rows))}); "
            "EER and t-DCF need finite scores"
        )
    scores = bonafide_score(logits)  # (N,) bona fide log-odds
    is_bona = labels == 1
    for present, name in ((is_bona, "bona fide (label 1)"), (~is_bona, "spoof (label 0)")):
        if not present.any():
            raise ValueError(f"no {name} trials among {labels.size:,}: the EER needs both classes")
    _check_soft(scores[is_bona], scores[~is_bona])
    return compute_eer(scores[is_bona], scores[~is_bona])[0]


# --- min t-DCF (ASVspoof 2019, legacy formulation) ------------------------------------------------


@dataclass(frozen=True)
class CostModel:
    """Priors and costs of the t-DCF (Kinnunen et al., Odyssey 2018)."""

    p_spoof: float  # prior of a spoofing attack
    p_tar: float  # prior of a target speaker
    p_non: float  # prior of a zero-effort nontarget
    c_miss_asv: float  # ASV falsely rejects a target
    c_fa_asv: float  # ASV falsely accepts a nontarget
    c_miss_cm: float  # CM falsely rejects a bona fide trial
    c_fa_cm: float  # CM falsely accepts a spoof

    def __post_init__(self) -> None:
        priors = (self.p_spoof, self.p_tar, self.p_non)
        if min(priors) < 0 or abs(sum(priors) - 1) > 1e-10:
            raise ValueError(f"t-DCF priors must be non-negative and sum to 1, got {priors}")
        costs = (self.c_miss_asv, self.c_fa_asv, self.c_miss_cm, self.c_fa_cm)
        if min(costs) < 0:
            raise ValueError(f"t-DCF costs must be non-negative, got {costs}")


# The ASVspoof 2019 evaluation plan's values, written as the organisers' code writes them so the
# priors are the same floats: Ptar = 0.9405, Pnon = 0.0095.
ASVSPOOF2019_COST_MODEL = CostModel(
    p_spoof=0.05,
    p_tar=(1 - 0.05) * 0.99,
    p_non=(1 - 0.05) * 0.01,
    c_miss_asv=1,
    c_fa_asv=10,
    c_miss_cm=1,
    c_fa_cm=10,
)


@dataclass
class AsvScores:
    """The organisers' ASV scores, split by trial key (target / nontarget / spoof)."""

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray
    path: Path | None = None


def read_asv_scores(path: str | Path) -> AsvScores:
    """Read `ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt` (lines: SOURCE KEY SCORE).

    Args:
        path: the organisers' ASV score file; KEY is target, nontarget or spoof.

    Returns:
        AsvScores with one float64 array per key.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line without 3 fields, an unknown key or a score that is not a number
            (the message names the file and line), or a key with no trials.
    """
    path = Path(path)
    existing_file(path, "ASV score file")
    columns: dict[str, list[float]] = {k: [] for k in ASV_KEYS}
    for n, line in text_lines(path, "ASV score file"):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ValueError(
                f"{path.name} line {n}: expected 3 fields (source key score), got {len(fields)}: {line.strip()!r}"
            )
        if fields[1] not in columns:
            raise ValueError(f"{path.name} line {n}: key {fields[1]!r} is not one of {', '.join(ASV_KEYS)}")
        try:
            columns[fields[1]].append(float(fields[2]))
        except ValueError:
            raise ValueError(f"{path.name} line {n}: score {fields[2]!r} is not a number") from None
    for key, values in columns.items():
        if not values:
            raise ValueError(f"{path.name} has no {key} trials; the t-DCF needs target, nontarget and spoof ASV scores")
    asv = AsvScores(*(np.array(columns[k], dtype=np.float64) for k in ASV_KEYS), path=path)
    for key in ASV_KEYS:
        _check_finite(getattr(asv, key), source=f"{path.name}: {key} ASV ")
    return asv


def find_asv_scores(data_root: str | Path, split: str) -> Path:
    """Find the organisers' ASV score file of a split under a data root.

    Accepts the official `LA/` folder (holding `ASVspoof2019_LA_asv_scores/`), its parent, a Kaggle
    copy nested `LA/LA/`, or a folder that holds the score files directly.

    Args:
        data_root: where to look.
        split: "dev" or "eval" (the organisers published no ASV scores for train).

    Returns:
        The path of `ASVspoof2019.LA.asv.{split}.gi.trl.scores.txt`.

    Raises:
        ValueError: split is not dev or eval.
        FileNotFoundError: not found; the message lists every place looked in.
    """
    if split not in ("dev", "eval"):
        raise ValueError(f"ASV scores exist only for the dev and eval splits, got split {split!r}")
    root = Path(data_root)
    name = ASV_SCORES_FILE.format(split=split)
    folders = [root, root / ASV_SCORES_DIR, root / "LA" / ASV_SCORES_DIR, root / "LA" / "LA" / ASV_SCORES_DIR]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"--data-root {root} has no {name} (looked in {', '.join(str(d) for d in folders)}): expected the "
        "official LA layout, the Kaggle copy or a folder of score files; or pass --asv-scores FILE"
    )


def compute_asv_error_rates(asv: AsvScores) -> dict[str, float]:
    """ASV operating point of the t-DCF: the threshold at the ASV's own target/nontarget EER.

    Transcribes the organisers' `obtain_asv_error_rates` (accept when score >= threshold).

    Args:
        asv: the organisers' ASV scores.

    Returns:
        {"threshold", "eer", "pfa" (nontargets accepted), "pmiss" (targets rejected),
        "pmiss_spoof" (spoofs rejected by the ASV)}, rates as fractions.
    """
    eer, threshold = compute_eer(asv.target, asv.nontarget)
    return {
        "threshold": threshold,
        "eer": eer,
        "pfa": np.count_nonzero(asv.nontarget >= threshold) / asv.nontarget.size,
        "pmiss": np.count_nonzero(asv.target < threshold) / asv.target.size,
        "pmiss_spoof": np.count_nonzero(asv.spoof < threshold) / asv.spoof.size,
    }


def compute_tdcf_curve(
    bonafide_scores: Any,
    spoof_scores: Any,
    asv: AsvScores,
    cost_model: CostModel = ASVSPOOF2019_COST_MODEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised t-DCF of a CM over all its thresholds, ASVspoof 2019 (legacy) formulation.

    With the ASV fixed at its EER threshold (Kinnunen et al., Odyssey 2018; ASVspoof 2019
    evaluation plan):
        C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv
        C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)
        t-DCF_norm(s) = (C1 Pmiss_cm(s) + C2 Pfa_cm(s)) / min(C1, C2)
    A value above 1 means the tandem system does better without the CM.

    Args:
        bonafide_scores: (N_bona,) CM scores of bona fide trials; higher = more bona fide.
        spoof_scores: (N_spoof,) CM scores of spoofed trials.
        asv: the organisers' ASV scores of the same split.
        cost_model: priors and costs; the ASVspoof 2019 values by default.

    Returns:
        (tdcf_norm, thresholds), both (N + 1,), on the thresholds of `compute_det_curve`.

    Raises:
        ValueError: as `compute_det_curve`; fewer than 3 distinct CM scores; C1 or C2 not positive
            (e.g. an ASV that rejects every spoof makes the normalisation undefined).
    """
    bona = _as_scores(bonafide_scores, "bona fide scores")
    spoof = _as_scores(spoof_scores, "spoof scores")
    _check_soft(bona, spoof)
    pmiss_cm, pfa_cm, thresholds = compute_det_curve(bona, spoof)
    rates = compute_asv_error_rates(asv)
    m = cost_model
    c1 = m.p_tar * (m.c_miss_cm - m.c_miss_asv * rates["pmiss"]) - m.p_non * m.c_fa_asv * rates["pfa"]
    c2 = m.c_fa_cm * m.p_spoof * (1 - rates["pmiss_spoof"])
    if c1 <= 0 or c2 <= 0:
        raise ValueError(
            f"t-DCF weights C1 = {c1:.6g}, C2 = {c2:.6g} must be positive; check the ASV scores "
            f"(ASV Pmiss {rates['pmiss']:.4f}, Pfa {rates['pfa']:.4f}, spoofs rejected {rates['pmiss_spoof']:.4f})"
        )
    tdcf = c1 * pmiss_cm + c2 * pfa_cm
    return tdcf / min(c1, c2), thresholds


def compute_min_tdcf(
    bonafide_scores: Any,
    spoof_scores: Any,
    asv: AsvScores,
    cost_model: CostModel = ASVSPOOF2019_COST_MODEL,
) -> float:
    """Minimum normalised t-DCF of a CM, the primary ASVspoof 2019 metric (see `compute_tdcf_curve`).

    Returns:
        min over CM thresholds of the normalised t-DCF (0 = perfect CM, 1 = no better than no CM).
    """
    tdcf_norm, _ = compute_tdcf_curve(bonafide_scores, spoof_scores, asv, cost_model)
    return float(tdcf_norm.min())


# --- min t-DCF (ASVspoof 2021, revised formulation) -------------------------------------------------


def compute_tdcf_curve_2021(
    bonafide_scores: Any,
    spoof_scores: Any,
    asv: AsvScores,
    cost_model: CostModel = ASVSPOOF2019_COST_MODEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised t-DCF of a CM over all its thresholds, the revised formulation ranked in ASVspoof 2021.

    Kinnunen et al., "Tandem assessment of spoofing countermeasures and automatic speaker verification:
    fundamentals", IEEE/ACM TASLP 2020, as the organisers' 2021 `eval-package/eval_metrics.py`
    (`compute_tDCF`) computes it, with the ASV fixed at its EER threshold (`compute_asv_error_rates`):
        C0 = Ptar Cmiss_asv Pmiss_asv + Pnon Cfa_asv Pfa_asv      (what the ASV's own errors cost)
        C1 = Ptar Cmiss_cm - C0
        C2 = Pspoof Cfa_cm Pfa_spoof_asv                           (spoofs the ASV accepts, at >= threshold)
        t-DCF_norm(s) = (C0 + C1 Pmiss_cm(s) + C2 Pfa_cm(s)) / (C0 + min(C1, C2))
    C1 equals the legacy one and C2 differs from it only in rounding; the revision is the C0 term, so 0 is no
    longer reachable and 1 is still "no better than no CM". The 2021 costs are the 2019 ones (the 2021 package's
    tandem Cmiss, Cfa and Cfa_spoof are `c_miss_asv` = `c_miss_cm` = 1, `c_fa_asv` = 10 and `c_fa_cm` = 10).

    Args:
        bonafide_scores: (N_bona,) CM scores of bona fide trials; higher = more bona fide.
        spoof_scores: (N_spoof,) CM scores of spoofed trials.
        asv: ASV scores of the same trials' conditions (target / nontarget / spoof).
        cost_model: priors and costs; the ASVspoof 2019 (= 2021) values by default.

    Returns:
        (tdcf_norm, thresholds), both (N + 1,), on the thresholds of `compute_det_curve`.

    Raises:
        ValueError: as `compute_det_curve`; fewer than 3 distinct CM scores; a negative C0, C1 or C2 (ASV error
            rates that cannot be right).
    """
    bona = _as_scores(bonafide_scores, "bona fide scores")
    spoof = _as_scores(spoof_scores, "spoof scores")
    _check_soft(bona, spoof)
    pmiss_cm, pfa_cm, thresholds = compute_det_curve(bona, spoof)
    rates = compute_asv_error_rates(asv)
    pfa_spoof_asv = np.count_nonzero(asv.spoof >= rates["threshold"]) / asv.spoof.size
    m = cost_model
    # the organisers' expressions in their order, so the floats agree bit for bit
    c0 = m.p_tar * m.c_miss_asv * rates["pmiss"] + m.p_non * m.c_fa_asv * rates["pfa"]
    c1 = m.p_tar * m.c_miss_cm - c0
    c2 = m.p_spoof * m.c_fa_cm * pfa_spoof_asv
    if min(c0, c1, c2) < 0 or c0 + min(c1, c2) <= 0:
        raise ValueError(
            f"t-DCF weights C0 = {c0:.6g}, C1 = {c1:.6g}, C2 = {c2:.6g} must be non-negative with C0 + min(C1, C2) "
            f"> 0; check the ASV scores (ASV Pmiss {rates['pmiss']:.4f}, Pfa {rates['pfa']:.4f}, spoofs accepted "
            f"{pfa_spoof_asv:.4f})"
        )
    tdcf = c0 + c1 * pmiss_cm + c2 * pfa_cm
    return tdcf / (c0 + min(c1, c2)), thresholds


def compute_min_tdcf_2021(
    bonafide_scores: Any,
    spoof_scores: Any,
    asv: AsvScores,
    cost_model: CostModel = ASVSPOOF2019_COST_MODEL,
) -> float:
    """Minimum normalised t-DCF of a CM, ASVspoof 2021 revised formulation (see `compute_tdcf_curve_2021`)."""
    tdcf_norm, _ = compute_tdcf_curve_2021(bonafide_scores, spoof_scores, asv, cost_model)
    return float(tdcf_norm.min())


# --- ASVspoof 5 track-1 metrics: minDCF, actDCF, Cllr -----------------------------------------------


@dataclass(frozen=True)
class DetectionCosts:
    """Prior and costs of the CM's own detection cost function (ASVspoof 5 evaluation plan, track 1).

    The one owner of these numbers: minDCF, actDCF, the Bayes threshold and the calibration prior all read them
    from here. The DCF of a threshold is Cmiss (1 - Pspoof) Pmiss + Cfa Pspoof Pfa, where a miss is a bona fide
    trial rejected and a false alarm a spoof accepted.
    """

    p_spoof: float = 0.05  # prior of a spoofing attack
    c_miss: float = 1.0  # cost of rejecting a bona fide trial
    c_fa: float = 10.0  # cost of accepting a spoof

    def __post_init__(self) -> None:
        if not 0 < self.p_spoof < 1:
            raise ValueError(f"DCF prior p_spoof must be in (0, 1), got {self.p_spoof}")
        if not (self.c_miss > 0 and self.c_fa > 0):
            raise ValueError(f"DCF costs must be positive, got c_miss {self.c_miss}, c_fa {self.c_fa}")

    @property
    def beta(self) -> float:
        """Cmiss (1 - Pspoof) / (Cfa Pspoof), the evaluation plan's beta (1.9 for the ASVspoof 5 costs)."""
        return self.c_miss * (1 - self.p_spoof) / (self.c_fa * self.p_spoof)

    @property
    def effective_prior(self) -> float:
        """The bona fide prior that alone gives the same Bayes decisions as these prior and costs:
        Cmiss (1 - Pspoof) / (Cmiss (1 - Pspoof) + Cfa Pspoof) = beta / (1 + beta) (0.655172 for ASVspoof 5)."""
        return self.beta / (1 + self.beta)


ASVSPOOF5_COSTS = DetectionCosts()


def bayes_threshold(costs: DetectionCosts = ASVSPOOF5_COSTS) -> float:
    """THE verdict threshold of the project on calibrated scores: -ln(beta) (-0.641854 for the ASVspoof 5 costs).

    A score that is a natural-log likelihood ratio of bona fide vs spoof is accepted as bona fide when it is at
    or above this threshold; that decision has the least expected cost under `costs` (ASVspoof 5 evaluation plan,
    Eq. 3; the organisers' `compute_actDCF`).
    """
    beta = costs.c_miss * (1 - costs.p_spoof) / (costs.c_fa * costs.p_spoof)  # the organisers' float, as written
    return float(-np.log(beta))


def llr_to_posterior(llr: Any, prior: float) -> np.ndarray:
    """Posterior probability of bona fide from a log-likelihood ratio and a bona fide prior (Bayes' rule in
    log-odds: sigmoid(llr + logit(prior)), computed without overflow).

    Args:
        llr: (N,) natural-log likelihood ratios of bona fide vs spoof (calibrated scores).
        prior: the bona fide prior in (0, 1), e.g. `ASVSPOOF5_COSTS.effective_prior` or 1 - p_spoof.

    Returns:
        (N,) float64 posteriors in [0, 1].
    """
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    log_odds = _to_numpy(llr).astype(np.float64) + np.log(prior / (1 - prior))
    return np.exp(-np.logaddexp(0.0, -log_odds))


def compute_min_dcf(bonafide_scores: Any, spoof_scores: Any, costs: DetectionCosts = ASVSPOOF5_COSTS) -> float:
    """Minimum normalised DCF of a CM, the primary ASVspoof 5 track-1 metric.

    The organisers' `compute_mindcf` (ASVspoof 5 `evaluation-package/calculate_modules.py`): the least
    Cmiss (1 - Pspoof) Pmiss + Cfa Pspoof Pfa over the points of the DET curve (`compute_det_curve`, tie groups
    crossed one trial at a time as there), divided by min(Cmiss (1 - Pspoof), Cfa Pspoof), the cost of the better
    of "accept all" and "reject all". Invariant to any increasing map of the scores.

    Args:
        bonafide_scores: (N_bona,) CM scores of bona fide trials; higher = more bona fide.
        spoof_scores: (N_spoof,) CM scores of spoofed trials.
        costs: prior and costs; the ASVspoof 5 ones by default.

    Returns:
        minDCF: 0 = perfect, 1 = no better than a fixed decision.

    Raises:
        ValueError: as `compute_det_curve` (a class absent, not 1-D, NaN/inf).
    """
    frr, far, _ = compute_det_curve(bonafide_scores, spoof_scores)
    p_target = 1 - costs.p_spoof  # the organisers' floats: their spoof prior is 1 - p_target, not p_spoof
    dcf = costs.c_miss * frr * p_target + costs.c_fa * far * (1 - p_target)
    return float(dcf.min() / min(costs.c_miss * p_target, costs.c_fa * (1 - p_target)))


def compute_act_dcf(bonafide_scores: Any, spoof_scores: Any, costs: DetectionCosts = ASVSPOOF5_COSTS) -> float:
    """Actual normalised DCF of a CM whose scores are calibrated LLRs: the DCF at the Bayes threshold.

    The organisers' `compute_actDCF` (ASVspoof 5 `calculate_modules.py`; evaluation plan Eq. 3): the threshold is
    `bayes_threshold(costs)` = -ln(beta); Pmiss is the share of bona fide scores below it, Pfa the share of spoof
    scores at or above it, and the DCF is normalised as in `compute_min_dcf`. Raw scores that are not LLRs (a
    logit difference, say) get an actDCF that says how far they are from calibrated; `fit_calibration` maps them.

    Args:
        bonafide_scores: (N_bona,) bona fide scores, natural-log likelihood ratios of bona fide vs spoof.
        spoof_scores: (N_spoof,) spoof scores, same scale.
        costs: prior and costs; the ASVspoof 5 ones by default.

    Returns:
        actDCF >= minDCF; above 1 means the scores' decisions cost more than a fixed decision.

    Raises:
        ValueError: as `compute_eer` (a class absent, not 1-D, NaN/inf).
    """
    bona = _as_scores(bonafide_scores, "bona fide scores")
    spoof = _as_scores(spoof_scores, "spoof scores")
    threshold = bayes_threshold(costs)
    rate_miss = np.count_nonzero(bona < threshold) / bona.size
    rate_fa = np.count_nonzero(spoof >= threshold) / spoof.size
    dcf = costs.c_miss * (1 - costs.p_spoof) * rate_miss + costs.c_fa * costs.p_spoof * rate_fa
    return float(dcf / min(costs.c_fa * costs.p_spoof, costs.c_miss * (1 - costs.p_spoof)))


def compute_cllr(bonafide_scores: Any, spoof_scores: Any) -> float:
    """Log-likelihood-ratio cost Cllr in bits (Brümmer & du Preez, "Application-independent evaluation of speaker
    detection", Computer Speech and Language 20, 2006), as the organisers' `calculate_CLLR` (ASVspoof 5):
        Cllr = (mean log(1 + e^-s) over bona fide + mean log(1 + e^s) over spoof) / (2 ln 2).
    0 = perfect, 1 = uninformative LLRs (all 0); unbounded for confident wrong LLRs. Computed with logaddexp, so
    scores of any size stay finite (the organisers' log1p(exp(.)) overflows beyond about 709).

    Args:
        bonafide_scores: (N_bona,) natural-log likelihood ratios of bona fide trials (calibrated scores).
        spoof_scores: (N_spoof,) natural-log likelihood ratios of spoofed trials.

    Raises:
        ValueError: as `compute_eer` (a class absent, not 1-D, NaN/inf).
    """
    bona = _as_scores(bonafide_scores, "bona fide scores")
    spoof = _as_scores(spoof_scores, "spoof scores")
    nats = np.mean(np.logaddexp(0.0, -bona)) + np.mean(np.logaddexp(0.0, spoof))
    return float(0.5 * nats / np.log(2))


# --- calibration: scores -> log-likelihood ratios ---------------------------------------------------

CALIBRATION_L2 = 1e-6  # ridge on the standardised slope and offset: keeps separable data finite, shifts others ~1e-6


@dataclass(frozen=True)
class Calibration:
    """An affine map from CM scores to natural-log likelihood ratios of bona fide vs spoof: llr = a * s + b.

    Fitted by `fit_calibration`; stored as plain numbers (`to_dict`), so it can sit in a torch checkpoint that
    loads with `weights_only=True`. `a > 0` always: the map keeps the ranking, so EER and minDCF are unchanged.
    """

    a: float  # slope, > 0
    b: float  # offset
    prior: float  # the bona fide prior it was fitted at (the costs' effective prior)
    n_bonafide: int  # trials it was fitted on
    n_spoof: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.a) and self.a > 0):
            raise ValueError(f"calibration slope a must be a finite number > 0, got {self.a!r}")
        if not np.isfinite(self.b):
            raise ValueError(f"calibration offset b must be finite, got {self.b!r}")
        if not 0 < self.prior < 1:
            raise ValueError(f"calibration prior must be in (0, 1), got {self.prior!r}")
        if min(self.n_bonafide, self.n_spoof) < 1:
            raise ValueError(f"calibration trial counts must be >= 1, got {self.n_bonafide}, {self.n_spoof}")

    def apply(self, scores: Any) -> np.ndarray:
        """(N,) float64 LLRs a * s + b of (N,) scores (list, numpy array or torch tensor)."""
        return self.a * _to_numpy(scores).astype(np.float64) + self.b

    def to_dict(self) -> dict[str, float | int]:
        """Plain Python numbers only (torch.load(weights_only=True) accepts them; so does JSON)."""
        return {"a": float(self.a), "b": float(self.b), "prior": float(self.prior),
                "n_bonafide": int(self.n_bonafide), "n_spoof": int(self.n_spoof)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """The inverse of `to_dict`; ValueError naming a missing or unknown key."""
        names = ("a", "b", "prior", "n_bonafide", "n_spoof")
        missing = [k for k in names if k not in d]
        unknown = sorted(set(d) - set(names))
        if missing or unknown:
            raise ValueError(
                f"calibration dict has keys {sorted(d)}: expected exactly {', '.join(names)}"
                + (f" (missing {', '.join(missing)})" if missing else "")
                + (f" (unknown {', '.join(unknown)})" if unknown else "")
            )
        return cls(float(d["a"]), float(d["b"]), float(d["prior"]), int(d["n_bonafide"]), int(d["n_spoof"]))


def fit_calibration(bonafide_scores: Any, spoof_scores: Any, costs: DetectionCosts = ASVSPOOF5_COSTS) -> Calibration:
    """Fit llr = a * s + b by prior-weighted logistic regression, Brümmer's FoCal formulation.

    Minimises the cross-entropy at the prior P = `costs.effective_prior` (0.655172 for the ASVspoof 5 costs):
        P / N_bona  sum_bona  log(1 + exp(-(a s + b + logit P)))
      + (1 - P) / N_spoof sum_spoof log(1 + exp(a s + b + logit P)),
    each class weighted by its prior and not by its count, so the class balance of the fitting set does not leak
    into b (N. Brümmer, FoCal toolkit; Brümmer & du Preez, CSL 2006; the same recipe as the ASVspoof 5 fusion
    tool). The scores are standardised first and a ridge of CALIBRATION_L2 (1e-6) on the standardised slope and
    offset keeps the optimum finite for separable data (a then ends large but finite, its decisions all right);
    otherwise its effect is of the order of 1e-6. Newton's method with a backtracking line search on the two
    parameters; the problem is strictly convex, so it converges in a few tens of steps at most.

    Fit on development scores, then `apply` unchanged to test scores: actDCF and Cllr on the test set then say
    how well the calibration carries over. Fitting and measuring on one set gives an optimistic actDCF and Cllr.

    Args:
        bonafide_scores: (N_bona,) CM scores of bona fide trials; higher = more bona fide.
        spoof_scores: (N_spoof,) CM scores of spoofed trials.
        costs: the costs whose effective prior the fit targets.

    Returns:
        Calibration(a, b, prior, n_bonafide, n_spoof).

    Raises:
        ValueError: a class absent, NaN/inf or not 1-D (as `compute_eer`); all scores equal; a fitted slope <= 0
            (the scores do not rank bona fide above spoof: inverted polarity, or a CM at chance -- a map with
            a <= 0 would reverse or erase the ranking, so it is refused rather than returned).
    """
    bona = _as_scores(bonafide_scores, "bona fide scores")
    spoof = _as_scores(spoof_scores, "spoof scores")
    pooled = np.concatenate((bona, spoof))
    mean, std = float(pooled.mean()), float(pooled.std())
    if not std > 0:
        raise ValueError(f"all {pooled.size:,} scores equal {float(pooled[0])!r}: there is nothing to calibrate")
    prior = costs.effective_prior
    x = (pooled - mean) / std  # (N,) standardised, so the ridge and the start do not depend on the score scale
    y = np.concatenate((np.ones(bona.size), np.zeros(spoof.size)))  # 1 = bona fide
    w = np.where(y == 1, prior / bona.size, (1 - prior) / spoof.size)  # each class sums to its prior
    logit_prior = np.log(prior / (1 - prior))

    sign = 1 - 2 * y  # the loss of a trial is log(1 + exp(sign * z)): -z for bona fide, z for spoof

    def objective(theta: np.ndarray) -> float:
        z = theta[0] * x + theta[1] + logit_prior  # (N,) posterior log-odds of bona fide
        return float(w @ np.logaddexp(0.0, sign * z) + 0.5 * CALIBRATION_L2 * theta @ theta)

    theta = np.zeros(2)  # (a, b) on the standardised scale
    value = objective(theta)
    for _ in range(100):
        z = theta[0] * x + theta[1] + logit_prior
        p = np.exp(-np.logaddexp(0.0, -z))  # sigmoid(z) without overflow
        r = w * (p - y)  # (N,) d objective / d z
        grad = np.array([r @ x, r.sum()]) + CALIBRATION_L2 * theta
        h = w * p * (1 - p)
        hess = np.array([[h @ (x * x), h @ x], [h @ x, h.sum()]]) + CALIBRATION_L2 * np.eye(2)
        step = np.linalg.solve(hess, -grad)
        decrease = float(grad @ step)  # -(Newton decrement)^2 < 0: the Hessian is positive definite
        if -decrease < 1e-24:  # the objective is within ~1e-24 of its minimum
            break
        t = 1.0
        # Armijo backtracking far from the optimum (full steps overshoot while the sigmoids saturate); near it the
        # full step is right and the decrease is below what the objective's rounding could confirm
        while -decrease > 1e-12 and objective(theta + t * step) > value + 0.25 * t * decrease and t > 1e-10:
            t /= 2
        theta = theta + t * step
        value = objective(theta)
    else:
        raise RuntimeError(f"calibration did not converge in 100 Newton steps (a, b = {theta.tolist()})")
    if theta[0] <= 0:
        raise ValueError(
            f"the fitted calibration slope is {theta[0] / std:.4g} <= 0: the scores do not rank bona fide above "
            "spoof (higher scores meaning spoof, or a CM at chance); an affine map with a <= 0 would reverse or erase "
            "the ranking, so none is fitted"
        )
    a = float(theta[0] / std)
    return Calibration(a=a, b=float(theta[1] - a * mean), prior=prior, n_bonafide=bona.size, n_spoof=spoof.size)


def calibration_effect(
    calibration: Calibration, bonafide_scores: Any, spoof_scores: Any, costs: DetectionCosts = ASVSPOOF5_COSTS
) -> dict[str, tuple[float, float]]:
    """What a calibration does to a set of scores: {"eer" (percent), "min_dcf", "act_dcf", "cllr": (raw, calibrated)}.
    EER and minDCF must not move (the map is increasing); actDCF and Cllr say how well calibrated each side is."""
    bona, spoof = _as_scores(bonafide_scores, "bona fide scores"), _as_scores(spoof_scores, "spoof scores")
    out = {}
    for name, fn in (("eer", lambda b, s: 100 * compute_eer(b, s)[0]), ("min_dcf", compute_min_dcf),
                     ("act_dcf", compute_act_dcf), ("cllr", compute_cllr)):  # fmt: skip
        args = () if name in ("eer", "cllr") else (costs,)
        out[name] = (fn(bona, spoof, *args), fn(calibration.apply(bona), calibration.apply(spoof), *args))
    return out


def describe_calibration(calibration: Calibration, effect: dict[str, tuple[float, float]] | None = None) -> str:
    """One line: the map, what it was fitted on and (with `effect`) what it does to actDCF and Cllr."""
    text = (f"llr = {calibration.a:.6g} * score {calibration.b:+.6g} (prior-weighted logistic regression at bona fide "
            f"prior {calibration.prior:.4f}, on {calibration.n_bonafide:,} bona fide + {calibration.n_spoof:,} spoof "
            "scores)")  # fmt: skip
    if effect:
        text += (f"; on those scores actDCF {effect['act_dcf'][0]:.4f} -> {effect['act_dcf'][1]:.4f}, Cllr "
                 f"{effect['cllr'][0]:.4f} -> {effect['cllr'][1]:.4f} bits (EER {effect['eer'][0]:.3f} % and minDCF "
                 f"{effect['min_dcf'][0]:.4f} unchanged)")  # fmt: skip
    return text


def fit_dev_calibration(scores: Any, keys: Any) -> tuple[dict[str, float | int] | None, str]:
    """The calibration train.py stores in a checkpoint, fitted on its epoch's dev scores: (`Calibration.to_dict()`,
    a line describing it), or (None, why not) when `fit_calibration` refuses (a CM at chance ranks spoof above bona
    fide in early epochs) -- a checkpoint without calibration still scores, as raw scores."""
    values, keys = _to_numpy(scores).astype(np.float64), np.asarray(_to_numpy(keys)).astype(str)
    bona, spoof = values[keys == "bonafide"], values[keys == "spoof"]
    try:
        calibration = fit_calibration(bona, spoof)
    except (ValueError, RuntimeError) as e:
        return None, f"no calibration fitted: {e}"
    return calibration.to_dict(), describe_calibration(calibration, calibration_effect(calibration, bona, spoof))


# --- per-attack EER -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupEER:
    """One row of `eer_by_group`: the trials compared and their EER (None when a class is missing)."""

    n_bonafide: int
    n_spoof: int
    eer: float | None  # fraction in [0, 1]


def eer_by_group(scores: Any, keys: Any, groups: Any, pool: str = "-") -> dict[str, GroupEER]:
    """EER of each value of a metadata column (attack, codec, source, speaker, ...).

    The rule, per group value g (the organisers' 2021 breakdown does the same for "spoof-only" factors such as
    the attack and "both" factors such as the codec): the spoof trials of g are compared with the bona fide
    trials of g when g has any; when it has none, with the bona fide trials whose group is `pool` ("-", the
    attack column's mark for bona fide), i.e. all bona fide trials of an attack-style column. The `pool` value
    itself is a row only when spoof trials carry it. A group left with one class reports its counts and EER None.

    Args:
        scores: (N,) CM scores; higher = more bona fide.
        keys: (N,) "bonafide" or "spoof".
        groups: (N,) the column's value of each trial.
        pool: the group value of bona fide trials that stand for every group ("-").

    Returns:
        {group value: GroupEER(n_bonafide, n_spoof, eer)}, sorted by value.

    Raises:
        ValueError: lengths differ, a key other than bonafide/spoof, NaN/inf scores.
    """
    scores = _as_scores(scores, "scores")
    keys = np.asarray(_to_numpy(keys)).astype(str)
    groups = np.asarray(_to_numpy(groups)).astype(str)
    if not (scores.shape == keys.shape == groups.shape):
        raise ValueError(f"scores {scores.shape}, keys {keys.shape} and groups {groups.shape} must have the same shape")
    bad = ~np.isin(keys, KEYS)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{int(bad.sum()):,} key(s) are not bonafide or spoof (first: {str(keys[i])!r} at index {i})")
    is_bona = keys == "bonafide"
    pooled = scores[is_bona & (groups == pool)]
    table = {}
    for g in sorted(set(groups.tolist())):
        in_g = groups == g
        if g == pool and not (in_g & ~is_bona).any():
            continue  # the bona fide pool of an attack-style column, not a condition of its own
        bona = scores[in_g & is_bona] if (in_g & is_bona).any() else pooled
        spoof = scores[in_g & ~is_bona]
        eer = compute_eer(bona, spoof)[0] if bona.size and spoof.size else None
        table[g] = GroupEER(n_bonafide=int(bona.size), n_spoof=int(spoof.size), eer=eer)
    return table


def eer_by_column(scores: Any, keys: Any, groups: Any, pool: str = "-") -> dict[str, GroupEER]:
    """EER of each value of any metadata column, for `metrics.py --by`: a value held by both classes compares its own
    trials; a value held by one class only (an attack, a bona fide source) is compared with every trial of the other
    class. The attack column's bona fide mark `pool` ("-") is no row unless spoof trials carry it.

    Returns:
        {value: GroupEER(n_bonafide, n_spoof, eer)} sorted by value; eer None where a side is empty.
    Raises:
        ValueError: as `eer_by_group`.
    """
    table = eer_by_group(scores, keys, groups, pool)  # its checks; its rows stand where both classes are present
    scores = _as_scores(scores, "scores")
    keys = np.asarray(_to_numpy(keys)).astype(str)
    groups = np.asarray(_to_numpy(groups)).astype(str)
    is_bona = keys == "bonafide"
    for g in sorted(set(groups.tolist())):
        in_g = groups == g
        has_bona, has_spoof = bool((in_g & is_bona).any()), bool((in_g & ~is_bona).any())
        if has_bona and has_spoof or (g == pool and not has_spoof):
            continue
        bona = scores[in_g & is_bona] if has_bona else scores[is_bona]
        spoof = scores[in_g & ~is_bona] if has_spoof else scores[~is_bona]
        eer = compute_eer(bona, spoof)[0] if bona.size and spoof.size else None
        table[g] = GroupEER(n_bonafide=int(bona.size), n_spoof=int(spoof.size), eer=eer)
    return dict(sorted(table.items()))


def per_attack_eer(scores: Any, systems: Any, keys: Any) -> dict[str, float]:
    """EER of each attack's spoofs against all bona fide trials.

    Args:
        scores: (N,) CM scores; higher = more bona fide.
        systems: (N,) attack ids ("A07".."A19"; "-" for bona fide).
        keys: (N,) "bonafide" or "spoof".

    Returns:
        {attack: EER as a fraction}, attacks sorted by name.

    Raises:
        ValueError: lengths differ, no bona fide or no spoof trials, a key other than bonafide/spoof, NaN/inf scores.
    """
    scores = _as_scores(scores, "scores")
    systems = np.asarray(systems).astype(str)
    keys = np.asarray(keys).astype(str)
    if not (scores.shape == systems.shape == keys.shape):
        raise ValueError(
            f"scores {scores.shape}, systems {systems.shape} and keys {keys.shape} must have the same shape"
        )
    _as_scores(scores[keys == "bonafide"], "bona fide scores")  # none: the same error as compute_eer's
    is_spoof = keys == "spoof"
    if not is_spoof.any():
        raise ValueError("no spoof trials: per-attack EER needs at least one attack")
    groups = np.where(keys == "bonafide", "-", systems)  # every bona fide trial is in the pool, whatever its system
    return {attack: row.eer for attack, row in eer_by_group(scores, keys, groups).items()}


# --- score files --------------------------------------------------------------------------------


@dataclass
class ScoreFile:
    """A CM score file: one trial per entry, in file order."""

    utt_id: np.ndarray  # (N,) str
    system: np.ndarray  # (N,) str, "-" for bona fide
    key: np.ndarray  # (N,) str, "bonafide" | "spoof"
    score: np.ndarray  # (N,) float64, higher = more bona fide
    path: Path | None = None

    def __len__(self) -> int:
        return self.score.size

    @property
    def bonafide_scores(self) -> np.ndarray:
        return self.score[self.key == "bonafide"]

    @property
    def spoof_scores(self) -> np.ndarray:
        return self.score[self.key == "spoof"]


def write_score_file(path: str | Path, utt_ids: Any, systems: Any, keys: Any, scores: Any) -> Path:
    """Write scores in the ASVspoof CM format `UTT SYSTEM KEY SCORE`, atomically.

    The file is written to a temporary file in the same folder and renamed over `path`, so a reader
    never sees half a file. Scores are written with `repr`, which reads back to the same float.

    Args:
        path: destination; its folder is created if missing.
        utt_ids: (N,) utterance ids, unique.
        systems: (N,) attack ids, "-" for bona fide.
        keys: (N,) "bonafide" or "spoof".
        scores: (N,) CM scores; higher = more bona fide.

    Returns:
        The path written.

    Raises:
        ValueError: lengths differ, a duplicate utt id, a key other than bonafide/spoof, or a field
            that is empty or contains whitespace.
    """
    path = Path(path)
    columns = [np.asarray(_to_numpy(c)).astype(str) for c in (utt_ids, systems, keys)]
    values = _to_numpy(scores).astype(np.float64)
    if any(c.ndim != 1 for c in columns) or values.ndim != 1 or len({c.size for c in columns} | {values.size}) != 1:
        raise ValueError(
            "utt_ids, systems, keys and scores must be 1-D of one length, got shapes "
            f"{[c.shape for c in columns] + [values.shape]}"
        )
    seen: dict[str, int] = {}
    lines = []
    for i, (utt, system, key, score) in enumerate(zip(*(c.tolist() for c in columns), values.tolist())):
        for field in (utt, system, key):
            if field.split() != [field]:
                raise ValueError(f"entry {i}: field {field!r} is empty or contains whitespace")
        if key not in KEYS:
            raise ValueError(f"entry {i} ({utt}): key {key!r} is not bonafide or spoof")
        if utt in seen:
            raise ValueError(f"entry {i}: duplicate utt_id {utt} (first at entry {seen[utt]})")
        seen[utt] = i
        lines.append(f"{utt} {system} {key} {score!r}\n")
    with atomic_write(path, "w") as f:
        f.writelines(lines)
    return path


def read_score_file(path: str | Path) -> ScoreFile:
    """Read a CM score file: `UTT SYSTEM KEY SCORE`, or the baseline files' 6-column form
    `SPEAKER UTT - SYSTEM KEY SCORE` (the CM protocol's five columns + score).

    Args:
        path: the score file.

    Returns:
        ScoreFile in file order. NaN/inf scores are read as they are; `evaluate_scores` refuses them.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line with neither 4 nor 6 fields, a key other than bonafide/spoof, a score
            that is not a number, a duplicate utt id (each names the file and line), or no lines.
    """
    path = Path(path)
    existing_file(path, "score file")
    utts, systems, keys, scores = [], [], [], []
    first_line: dict[str, int] = {}
    for n, line in text_lines(path, "score file"):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 4:
            utt, system, key, score = fields
        elif len(fields) == 6:
            _, utt, _, system, key, score = fields
        else:
            raise ValueError(
                f"{path.name} line {n}: expected 4 fields (utt_id system key score) or 6 "
                f"(speaker utt_id - system key score), got {len(fields)}: {line.strip()!r}"
            )
        if key not in KEYS:
            raise ValueError(f"{path.name} line {n}: key {key!r} is not bonafide or spoof: {line.strip()!r}")
        try:
            scores.append(float(score))
        except ValueError:
            raise ValueError(f"{path.name} line {n}: score {score!r} is not a number: {line.strip()!r}") from None
        if utt in first_line:
            raise ValueError(f"{path.name} line {n}: duplicate utt_id {utt} (first on line {first_line[utt]})")
        first_line[utt] = n
        utts.append(utt)
        systems.append(system)
        keys.append(key)
    if not scores:
        raise ValueError(f"{path.name} has no score lines")
    return ScoreFile(np.array(utts), np.array(systems), np.array(keys), np.array(scores, dtype=np.float64), path)


# --- ASVspoof 5 score and key files -----------------------------------------------------------------

ASV5_SCORE_HEADER = ("filename", "cm-score")
ASV5_KEY_HEADER = ("filename", "cm-label")


def _write_asv5(path: str | Path, header: tuple[str, str], utt_ids: Any, values: list[str]) -> Path:
    """Header + `utt<TAB>value` lines, atomically; refuses ids that are empty, hold whitespace or repeat."""
    utts = np.asarray(_to_numpy(utt_ids)).astype(str)
    if utts.ndim != 1 or utts.size != len(values):
        raise ValueError(f"utt_ids {utts.shape} and {header[1]}s ({len(values)},) must be 1-D of one length")
    seen: dict[str, int] = {}
    for i, utt in enumerate(utts.tolist()):
        if utt.split() != [utt]:
            raise ValueError(f"entry {i}: filename {utt!r} is empty or contains whitespace")
        if utt in seen:
            raise ValueError(f"entry {i}: duplicate filename {utt} (first at entry {seen[utt]})")
        seen[utt] = i
    with atomic_write(path, "w") as f:
        f.write("\t".join(header) + "\n")
        f.writelines(f"{utt}\t{value}\n" for utt, value in zip(utts.tolist(), values))
    return Path(path)


def write_asv5_scores(path: str | Path, utt_ids: Any, scores: Any) -> Path:
    """Write the ASVspoof 5 score file `filename<TAB>cm-score` (with that header), atomically.

    The form the organisers' `evaluation.py --m t1 --cm FILE` reads (ASVspoof 5 `evaluation-package/util.py`).
    Their actDCF and Cllr read the scores as natural-log likelihood ratios: write calibrated scores
    (`Calibration.apply`) there. Scores are written with `repr`, which reads back to the same float.

    Args:
        path: destination; its folder is created if missing.
        utt_ids: (N,) unique file names (no extension), e.g. E_0000000001.
        scores: (N,) scores; higher = more bona fide.

    Returns:
        The path written.

    Raises:
        ValueError: lengths differ, an id is empty, holds whitespace or repeats.
    """
    values = _to_numpy(scores).astype(np.float64)
    if values.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {values.shape}")
    return _write_asv5(path, ASV5_SCORE_HEADER, utt_ids, [repr(v) for v in values.tolist()])


def write_asv5_keys(path: str | Path, utt_ids: Any, keys: Any) -> Path:
    """Write the ASVspoof 5 key file `filename<TAB>cm-label` (with that header; labels bonafide / spoof), atomically.

    Raises:
        ValueError: lengths differ, a label other than bonafide/spoof, an id empty, with whitespace or repeated.
    """
    labels = np.asarray(_to_numpy(keys)).astype(str)
    if labels.ndim != 1:
        raise ValueError(f"keys must be 1-D, got shape {labels.shape}")
    for i, key in enumerate(labels.tolist()):
        if key not in KEYS:
            raise ValueError(f"entry {i}: key {key!r} is not bonafide or spoof")
    return _write_asv5(path, ASV5_KEY_HEADER, utt_ids, labels.tolist())


def _read_asv5(path: str | Path, header: tuple[str, str], what: str) -> dict[str, tuple[str, int]]:
    """{filename: (value, line number)} of a two-column ASVspoof 5 file, checked line by line."""
    path = Path(path)
    existing_file(path, f"ASVspoof 5 {what} file")
    rows: dict[str, tuple[str, int]] = {}
    expected = "<TAB>".join(header)
    seen_header = False
    for n, line in text_lines(path, f"ASVspoof 5 {what} file"):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue  # blank lines, as the organisers' pandas reader skips them
        fields = [f.strip() for f in text.split("\t")]
        if not seen_header:
            if tuple(fields) != header:
                raise ValueError(
                    f"{path.name} line {n}: expected the header {expected!r} (tab-separated), got {text!r}"
                )
            seen_header = True
            continue
        if len(fields) != 2 or not all(fields) or len(fields[0].split()) != 1:
            raise ValueError(
                f"{path.name} line {n}: expected 2 tab-separated fields ({expected.replace('<TAB>', ', ')}), "
                f"got {text!r}"
            )
        if fields[0] in rows:
            raise ValueError(
                f"{path.name} line {n}: duplicate filename {fields[0]} (first on line {rows[fields[0]][1]})"
            )
        rows[fields[0]] = (fields[1], n)
    if not seen_header:
        raise ValueError(f"{path.name} is empty: expected the header {expected!r} and one line a trial")
    if not rows:
        raise ValueError(f"{path.name} has a header but no {what} lines")
    return rows


def read_asv5_scores(scores_path: str | Path, keys_path: str | Path) -> ScoreFile:
    """Read an ASVspoof 5 score file and its key file (`filename<TAB>cm-score`, `filename<TAB>cm-label`).

    Both need their header and the same file names, each once (the organisers' `load_cm_scores_keys` requires
    the same; the order may differ). The key file names no attack, so `system` is "-" for bona fide and "spoof"
    for spoofs: a per-attack table has the one row "spoof", the pooled EER.

    Returns:
        ScoreFile in the score file's order (path = the score file).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a bad header, a line without 2 tab-separated fields, a score that is not a number, a label
            other than bonafide/spoof, a repeated file name (each naming the file and line), or files whose file
            names differ (with counts and the first few).
    """
    scores_path, keys_path = Path(scores_path), Path(keys_path)
    score_rows = _read_asv5(scores_path, ASV5_SCORE_HEADER, "score")
    key_rows = _read_asv5(keys_path, ASV5_KEY_HEADER, "key")
    for utt, (key, n) in key_rows.items():
        if key not in KEYS:
            raise ValueError(f"{keys_path.name} line {n}: label {key!r} of {utt} is not bonafide or spoof")
    unkeyed = [u for u in score_rows if u not in key_rows]
    unscored = [u for u in key_rows if u not in score_rows]
    if unkeyed or unscored:
        parts = []
        if unkeyed:
            parts.append(f"{len(unkeyed):,} scored file(s) have no key (first: {', '.join(unkeyed[:3])})")
        if unscored:
            parts.append(f"{len(unscored):,} keyed file(s) have no score (first: {', '.join(unscored[:3])})")
        raise ValueError(f"{scores_path.name} and {keys_path.name} do not hold the same files: " + "; ".join(parts))
    values = []
    for utt, (score, n) in score_rows.items():
        try:
            values.append(float(score))
        except ValueError:
            raise ValueError(f"{scores_path.name} line {n}: score {score!r} of {utt} is not a number") from None
    utts = np.array(list(score_rows))
    keys = np.array([key_rows[u][0] for u in utts.tolist()])
    systems = np.where(keys == "bonafide", "-", "spoof")
    return ScoreFile(utts, systems, keys, np.array(values, dtype=np.float64), scores_path)


# --- evaluation and report ----------------------------------------------------------------------


def check_trials(scores: ScoreFile, trials: Any, protocol: str = "the protocol") -> None:
    """Every trial of the protocol exactly once in the score file, with the protocol's key and system.

    Args:
        scores: a read score file (duplicates were already refused by `read_score_file`).
        trials: (utt_id, system, key) per protocol line (data.py's ProtocolEntry works: it has the three fields).
        protocol: its name, for the message.

    Raises:
        ValueError: one message with the counts of trials missing, lines not in the protocol and lines whose key or
            system contradicts it, each with its first few utterances -- an EER over a third of the trials, or with
            keys that disagree with the protocol, is not the split's EER.
    """
    expected = {}
    for t in trials:
        utt, system, key = (t.utt_id, t.system, t.key) if hasattr(t, "utt_id") else t
        expected[str(utt)] = (str(system), str(key))
    got = {str(u): (str(s), str(k)) for u, s, k in zip(scores.utt_id, scores.system, scores.key)}
    missing = [u for u in expected if u not in got]
    extra = [u for u in got if u not in expected]
    wrong = [u for u, sk in got.items() if u in expected and expected[u] != sk]
    if not (missing or extra or wrong):
        return
    name = scores.path.name if scores.path else "the score file"

    def first(us: list[str], show) -> str:
        return ", ".join(show(u) for u in us[:3]) + (", ..." if len(us) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing):,} of its {len(expected):,} trials missing (first: {first(missing, str)})")
    if extra:
        parts.append(f"{len(extra):,} line(s) not in it (first: {first(extra, str)})")
    if wrong:
        show = lambda u: f"{u} has {' '.join(got[u])}, protocol {' '.join(expected[u])}"  # noqa: E731
        parts.append(f"{len(wrong):,} line(s) whose system/key contradict it (first: {first(wrong, show)})")
    raise ValueError(f"{name} does not match {protocol}: " + "; ".join(parts))


def evaluate_scores(scores: ScoreFile, asv: AsvScores | None = None) -> dict[str, Any]:
    """EER, min t-DCF, the ASVspoof 5 metrics and per-attack EER of a score file.

    minDCF, actDCF and Cllr use the ASVspoof 5 costs (`ASVSPOOF5_COSTS`). actDCF and Cllr read the scores as
    calibrated natural-log likelihood ratios: on raw scores (a logit difference) they measure the calibration as
    much as the CM; `fit_calibration` on development scores makes them meaningful. EER and minDCF do not depend
    on calibration.

    Args:
        scores: the CM scores (higher = more bona fide).
        asv: the organisers' ASV scores of the same split; None skips the t-DCF.

    Returns:
        {"eer": percent, "min_tdcf": float or None, "min_dcf", "act_dcf", "cllr" (bits), "n_bonafide", "n_spoof",
        "per_attack": {"A07": percent, ...}}.

    Raises:
        ValueError: NaN/inf scores (naming the first utt id), a class absent, hard decisions.
    """
    name = scores.path.name if scores.path else "scores"
    _check_finite(scores.score, scores.utt_id, f"{name}: " if scores.path else "")
    bona, spoof = scores.bonafide_scores, scores.spoof_scores
    for values, key in ((bona, "bonafide"), (spoof, "spoof")):
        if values.size == 0:
            raise ValueError(f"{name} has no {key} trials: the EER needs both bona fide and spoof scores")
    _check_soft(bona, spoof)
    return {
        "eer": 100 * compute_eer(bona, spoof)[0],
        "min_tdcf": None if asv is None else compute_min_tdcf(bona, spoof, asv),
        "min_dcf": compute_min_dcf(bona, spoof),
        "act_dcf": compute_act_dcf(bona, spoof),
        "cllr": compute_cllr(bona, spoof),
        "n_bonafide": int(bona.size),
        "n_spoof": int(spoof.size),
        "per_attack": {a: 100 * e for a, e in per_attack_eer(scores.score, scores.system, scores.key).items()},
    }


def format_report(result: dict[str, Any], title: str = "") -> str:
    """A plain-text report of `evaluate_scores`' result: EER, min t-DCF, minDCF / actDCF / Cllr, per-attack table."""
    lines = [title] if title else []
    lines.append(f"EER        {result['eer']:9.6f} %")
    tdcf = result["min_tdcf"]
    why = result.get("tdcf_na", "pass --asv-scores or --data-root")
    lines.append(f"min t-DCF  {tdcf:9.6f}" if tdcf is not None else f"min t-DCF  n/a ({why})")
    if "min_dcf" in result:  # the ASVspoof 5 line; actDCF and Cllr hold only for calibrated scores
        lines.append(
            f"minDCF     {result['min_dcf']:9.6f}   actDCF {result['act_dcf']:.6f}   Cllr {result['cllr']:.6f} bits   "
            f"({result['n_bonafide']:,} bona fide, {result['n_spoof']:,} spoof; actDCF and Cllr read scores as LLRs)"
        )
    lines.append("")
    lines.append("attack   EER (%)")
    lines += [f"{attack:<6} {eer:8.3f}" for attack, eer in result["per_attack"].items()]
    for column, rows in result.get("breakdown", {}).items():
        width = max([len(column)] + [len(g) for g in rows])
        lines += ["", f"{column:<{width}}  {'bonafide':>8}  {'spoof':>7}  EER (%)   (a value of one class only is "
                  "compared with every trial of the other)"]  # fmt: skip
        for g, r in rows.items():
            eer = f"{r['eer']:8.3f}" if r["eer"] is not None else f"{'n/a':>8}"
            lines.append(f"{g:<{width}}  {r['n_bonafide']:>8,}  {r['n_spoof']:>7,}  {eer}")
    return "\n".join(lines)


def breakdown(scores: ScoreFile, columns: list[str], column_of: dict[str, dict[str, str]] | None = None) -> dict:
    """`--by`: {column: {value: {"n_bonafide", "n_spoof", "eer" (percent or None)}}} of a score file.

    Args:
        scores: the checked score file.
        columns: metadata column names ("attack" is the score file's own system column).
        column_of: {utt id: {column: value}} from the corpus's key (`corpora.ProtocolEntry.column`); None: only
            "attack" can be broken down.
    Raises:
        ValueError: a column that neither the score file nor the key has (naming the columns there are).
    """
    out = {}
    for column in columns:
        if column in ("attack", "system"):
            groups = scores.system
        else:
            rows = [column_of.get(str(u), {}).get(column) for u in scores.utt_id] if column_of else [None]
            if any(v is None for v in rows):
                have = sorted({k for d in (column_of or {}).values() for k in d} | {"attack"})
                raise ValueError(f"--by {column}: the key has no {column!r} column (columns: {', '.join(have)}); "
                                 "give --data-root for the corpus's own columns")  # fmt: skip
            groups = np.array(rows)
        table = eer_by_column(scores.score, scores.key, groups)
        out[column] = {g: {"n_bonafide": r.n_bonafide, "n_spoof": r.n_spoof,
                           "eer": None if r.eer is None else 100 * r.eer} for g, r in table.items()}  # fmt: skip
    return out


# --- DET plot -----------------------------------------------------------------------------------

DET_TICKS = (0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80)  # percent


def _probit(p: np.ndarray) -> np.ndarray:
    """Normal deviate of each rate (the DET axis), clipped away from 0 and 1."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    uniq, inverse = np.unique(p, return_inverse=True)  # DET rates repeat a lot; invert each once
    return np.array([NormalDist().inv_cdf(float(u)) for u in uniq])[inverse]


def plot_det(curves: dict[str, tuple[Any, Any]], path: str | Path, title: str | None = None) -> Path:
    """DET curves of one or several systems on normal-deviate axes, EER points marked, as PNG.

    Args:
        curves: {system name: (bonafide_scores, spoof_scores)}; higher = more bona fide.
        path: PNG to write (atomically); its folder is created if missing.
        title: optional plot title.

    Returns:
        The path written.

    Raises:
        ValueError: no curves, or scores `compute_det_curve` refuses.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only the plot needs it
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_det needs at least one (bonafide, spoof) pair")
    path = Path(path)
    fig = Figure(figsize=(6, 6.3 + 0.2 * ((len(curves) + 2) // 2)), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lowest, highest = 0.0005, 0.5  # rates at the axis ends; widened for very good or very bad systems
    dets = {
        name: (*compute_det_curve(bona, spoof)[:2], compute_eer(bona, spoof)[0])
        for name, (bona, spoof) in curves.items()
    }
    eers = [eer for _, _, eer in dets.values()]
    if any(eer > 0 for eer in eers):
        lowest = min(lowest, max(min(eer for eer in eers if eer > 0) / 10, 1e-5))
    highest = max(highest, min(1.5 * max(eers), 0.95))
    for name, (frr, far, eer) in dets.items():
        (line,) = ax.plot(_probit(far), _probit(frr), lw=1.6, label=f"{name} (EER {100 * eer:.2f} %)")
        # EER 0 (perfect separation) has no curve inside the axes; its marker sits in the corner
        eer_xy = _probit(np.clip([eer, eer], lowest, highest))
        ax.plot(*eer_xy, "o", ms=7, mfc="white", mew=2, color=line.get_color(), clip_on=False)
    ticks = [t for t in DET_TICKS if lowest <= t / 100 <= highest]
    limits = _probit(np.array([lowest, highest]))
    ax.plot(limits, limits, ":", color="0.5", lw=1, label="EER line (FRR = FAR)")
    positions = _probit(np.array(ticks) / 100)
    labels = [f"{t:g}" for t in ticks]
    ax.set_xticks(positions, labels)
    ax.set_yticks(positions, labels)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal")
    ax.grid(True, color="0.88")
    ax.set_xlabel("Spoof false acceptance rate (%)")
    ax.set_ylabel("Bona fide false rejection rate (%)")
    ax.set_title(title or "DET curve (higher score = bona fide)")
    # below the axes: good systems fill the lower left and systems near chance the upper right
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=2, fontsize=9, frameon=False)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


# --- command line -------------------------------------------------------------------------------


def _infer_split(utt_ids: np.ndarray) -> str:
    """dev or eval from the utt ids' prefix (LA_D_ / LA_E_: `corpora.split_of_utt`), or ValueError asking for --split."""
    splits = {split_of_utt(u) for u in utt_ids.tolist()}
    split = splits.pop() if len(splits) == 1 and splits <= {"dev", "eval"} else None
    if split is None:
        prefixes = {u[:5] for u in utt_ids.tolist()}
        raise ValueError(
            f"cannot tell the split from the utt ids (prefixes {', '.join(sorted(prefixes)[:4])}); "
            "pass --split dev or --split eval"
        )
    return split


def check_against_protocol(scores: ScoreFile, data_root: Path, split: str) -> bool:
    """`check_trials` against the split's CM protocol under --data-root, when there is one (False when not found).

    The protocol is read by corpora.py's parser (the project's one; no torch).
    """
    try:
        layout = find_la_root(data_root)
    except FileNotFoundError:
        return False  # e.g. --data-root is the ASV scores' own folder
    if not layout.protocol_path(split).is_file():
        return False
    check_trials(scores, layout.protocol(split), layout.protocol_path(split).name)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scores", required=True, type=Path, help="CM score file: UTT SYSTEM KEY SCORE (or the 6-column baseline form)"
    )
    asv_group = parser.add_mutually_exclusive_group()
    asv_group.add_argument("--asv-scores", type=Path, help="the organisers' ASV score file, for the min t-DCF")
    asv_group.add_argument(
        "--data-root",
        type=Path,
        default=os.environ.get("ASVSPOOF_ROOT"),
        help="the corpus whose key the scores are checked against (any corpus corpora.py reads); for ASVspoof 2019 "
        "LA also where the ASV scores are (LA/, its parent, LA/LA/ or the scores' folder; default: $ASVSPOOF_ROOT)",
    )
    parser.add_argument(
        "--split", choices=("dev", "eval"), help="which ASV scores --data-root means; default: from the utt ids"
    )
    add_corpus_args(parser)
    parser.add_argument("--by", action="append", default=[], metavar="COLUMN",
                        help="counts and EER per value of a metadata column: attack, speaker, codec, vocoder, source, "
                        "... (repeatable; columns other than attack need --data-root)")  # fmt: skip
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: eer (%%), min_tdcf, min_dcf, act_dcf, cllr, n_bonafide, n_spoof, per_attack (%%), "
        "breakdown (--by)",
    )
    parser.add_argument("--det", type=Path, metavar="FILE.png", help="also write a DET curve")
    parser.add_argument("--debug", action="store_true", help="show the traceback on errors")
    return parser


def key_columns(entries: Any, columns: list[str]) -> dict[str, dict[str, str]]:
    """{utt id: {column: value}} of a corpus's entries, for `breakdown`."""
    return {e.utt_id: {c: v for c in columns if (v := e.column(c)) is not None} for e in entries}


def main(argv: list[str] | None = None) -> int:
    """Print EER, min t-DCF (2019 LA), minDCF, actDCF, Cllr, the per-attack table and any --by breakdown."""
    args = build_parser().parse_args(argv)
    if args.asv_scores is not None:
        args.data_root = None  # an explicit ASV file wins over $ASVSPOOF_ROOT
    check_outputs({"--det": args.det}, {"--scores": args.scores, "--asv-scores": args.asv_scores})
    scores = read_score_file(args.scores)
    asv_path, column_of, tdcf_na = args.asv_scores, None, None
    if args.data_root is not None:
        try:
            name = args.corpus or detect_corpus(args.data_root)
        except FileNotFoundError:
            name = "la19"  # e.g. --data-root is the ASV scores' own folder
        if name == "la19":
            if args.subset:
                raise ValueError(f"--subset {args.subset}: ASVspoof 2019 LA takes --split (dev, eval)")
            split = args.split or _infer_split(scores.utt_id)
            asv_path = find_asv_scores(args.data_root, split)  # first: a missing ASV file is the one line printed
            if check_against_protocol(scores, args.data_root, split):
                column_of = key_columns(find_la_root(args.data_root).protocol(split), ["speaker"])
            else:
                print(f"note: no CM protocol of {split} under --data-root {args.data_root}: the score file's trials "
                      "are not checked against it", file=sys.stderr)  # fmt: skip
        else:
            if args.split:
                raise ValueError(f"--split {args.split} is for ASVspoof 2019 LA; the {name} corpus takes --subset")
            corpus = read_corpus(args.data_root, name, args.subset)
            check_trials(scores, corpus.entries, corpus.key_file.name)
            column_of = key_columns(corpus.entries, corpus.columns())
            tdcf_na = f"{name} has no ASV scores: the t-DCF is ASVspoof 2019 LA's"
    asv = read_asv_scores(asv_path) if asv_path is not None else None
    result = evaluate_scores(scores, asv)
    if args.by:
        result["breakdown"] = breakdown(scores, args.by, column_of)
    if args.det is not None:
        plot_det({args.scores.stem: (scores.bonafide_scores, scores.spoof_scores)}, args.det)
    if args.json:
        print(json.dumps(result))
        return 0
    if tdcf_na:
        result["tdcf_na"] = tdcf_na
    title = (
        f"{args.scores.name}: {len(scores):,} scores ({scores.bonafide_scores.size:,} bona fide, "
        f"{scores.spoof_scores.size:,} spoof)" + (f"; ASV scores {asv_path.name}" if asv_path else "")
    )
    print(format_report(result, title))
    if args.det is not None:
        print(f"\nDET curve written to {args.det}")
    return 0


if __name__ == "__main__":
    run_cli(main)
