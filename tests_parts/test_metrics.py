"""Tests of metrics.py (to be merged into test_all.py as its `# --- metrics.py ---` section).

Run from the repository root: python -m pytest tests_parts/test_metrics.py -q
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import metrics

METRICS_PY = Path(metrics.__file__).resolve()
B01_EER, B01_MIN_TDCF = 9.572028, 0.235936  # ASVspoof 2019 LA eval, organisers' tDCF_python (legacy t-DCF)
B02_EER, B02_MIN_TDCF = 8.089825, 0.211053


def _shared_data() -> Path | None:
    """../shared/data next to the repository, or None when it is absent."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


@pytest.fixture
def protocols() -> Path:
    """The folder of official LA protocols, organisers' ASV scores and baseline CM scores."""
    shared = _shared_data()
    folder = shared / "protocols" / "asvspoof2019_la" if shared else None
    if folder is None or not folder.is_dir():
        pytest.skip("../shared/data/protocols/asvspoof2019_la absent")
    return folder


# --- the organisers' formulation (tDCF_python eval_metrics.py), transcribed as the reference ---


def _official_det_curve(target_scores, nontarget_scores):
    n_scores = target_scores.size + nontarget_scores.size
    all_scores = np.concatenate((target_scores, nontarget_scores))
    labels = np.concatenate((np.ones(target_scores.size), np.zeros(nontarget_scores.size)))
    indices = np.argsort(all_scores, kind="mergesort")
    labels = labels[indices]
    tar_trial_sums = np.cumsum(labels)
    nontarget_trial_sums = nontarget_scores.size - (np.arange(1, n_scores + 1) - tar_trial_sums)
    frr = np.concatenate((np.atleast_1d(0), tar_trial_sums / target_scores.size))
    far = np.concatenate((np.atleast_1d(1), nontarget_trial_sums / nontarget_scores.size))
    thresholds = np.concatenate((np.atleast_1d(all_scores[indices[0]] - 0.001), all_scores[indices]))
    return frr, far, thresholds


def _official_eer(target_scores, nontarget_scores):
    frr, far, thresholds = _official_det_curve(target_scores, nontarget_scores)
    abs_diffs = np.abs(frr - far)
    min_index = np.argmin(abs_diffs)
    eer = np.mean((frr[min_index], far[min_index]))
    return eer, thresholds[min_index]


def _official_asv_error_rates(tar_asv, non_asv, spoof_asv, asv_threshold):
    pfa_asv = sum(non_asv >= asv_threshold) / non_asv.size
    pmiss_asv = sum(tar_asv < asv_threshold) / tar_asv.size
    pmiss_spoof_asv = np.sum(spoof_asv < asv_threshold) / spoof_asv.size
    return pfa_asv, pmiss_asv, pmiss_spoof_asv


def _official_tdcf_legacy(bona_cm, spoof_cm, tar_asv, non_asv, spoof_asv):
    pspoof = 0.05
    cost = {"Pspoof": pspoof, "Ptar": (1 - pspoof) * 0.99, "Pnon": (1 - pspoof) * 0.01}
    cost.update({"Cmiss_asv": 1, "Cfa_asv": 10, "Cmiss_cm": 1, "Cfa_cm": 10})
    _, asv_threshold = _official_eer(tar_asv, non_asv)
    pfa_asv, pmiss_asv, pmiss_spoof_asv = _official_asv_error_rates(tar_asv, non_asv, spoof_asv, asv_threshold)
    pmiss_cm, pfa_cm, cm_thresholds = _official_det_curve(bona_cm, spoof_cm)
    c1 = cost["Ptar"] * (cost["Cmiss_cm"] - cost["Cmiss_asv"] * pmiss_asv) - cost["Pnon"] * cost["Cfa_asv"] * pfa_asv
    c2 = cost["Cfa_cm"] * cost["Pspoof"] * (1 - pmiss_spoof_asv)
    tdcf = c1 * pmiss_cm + c2 * pfa_cm
    return tdcf / np.minimum(c1, c2), cm_thresholds


def _random_scores(rng, tied: bool, negate: bool, n_max: int = 300):
    """Bona fide / spoof scores of random sizes; `tied` rounds them to integers (many ties)."""
    bona = rng.normal(rng.uniform(0, 3), rng.uniform(0.5, 2), rng.integers(1, n_max))
    spoof = rng.normal(0, rng.uniform(0.5, 2), rng.integers(1, n_max))
    if tied:
        bona, spoof = np.round(bona), np.round(spoof)
    return (-bona, -spoof) if negate else (bona, spoof)


def _random_asv(rng, tied: bool) -> metrics.AsvScores:
    target, nontarget, spoof = rng.normal(5, 2, 400), rng.normal(0, 2, 300), rng.normal(3, 2, 500)
    if tied:
        target, nontarget, spoof = np.round(target), np.round(nontarget), np.round(spoof)
    return metrics.AsvScores(target, nontarget, spoof)


# --- EER and DET curve ---


@pytest.mark.parametrize("negate", [False, True], ids=["bonafide-high", "negated"])
@pytest.mark.parametrize("tied", [False, True], ids=["continuous", "integer-ties"])
def test_det_curve_and_eer_equal_the_official_code_on_random_scores(tied, negate):
    rng = np.random.default_rng(1234 + 2 * tied + negate)
    for _ in range(200):
        bona, spoof = _random_scores(rng, tied, negate)
        for ours, official in zip(metrics.compute_det_curve(bona, spoof), _official_det_curve(bona, spoof)):
            np.testing.assert_array_equal(ours, official)
        assert metrics.compute_eer(bona, spoof) == tuple(float(v) for v in _official_eer(bona, spoof))


def test_det_curve_points_are_thresholds_accepting_scores_above_them():
    """Without ties each DET point is a real threshold: bona fide <= t rejected, spoof > t accepted."""
    rng = np.random.default_rng(7)
    bona, spoof = rng.normal(1, 1, 57), rng.normal(0, 1, 91)
    frr, far, thresholds = metrics.compute_det_curve(bona, spoof)
    for i, t in enumerate(thresholds):  # plain loop, one threshold at a time
        assert frr[i] == sum(b <= t for b in bona) / bona.size
        assert far[i] == sum(s > t for s in spoof) / spoof.size


def test_eer_of_separable_scores_is_zero_and_of_inverted_scores_is_one():
    assert metrics.compute_eer([3.0, 4.0], [1.0, 2.0])[0] == 0.0
    assert metrics.compute_eer([1.0, 2.0], [3.0, 4.0])[0] == 1.0


@pytest.mark.parametrize(
    "bona,spoof,match",
    [
        ([], [1.0, 2.0], "no bona fide scores"),
        ([1.0, 2.0], [], "no spoof scores"),
        ([[1.0, 2.0]], [0.0], r"1-D array of scores, got shape \(1, 2\)"),
        ([1.0, np.nan], [0.0, 0.5], r"1 of 2 scores are NaN \(first: index 1\)"),
        ([1.0, 2.0], [np.inf, 0.5], r"1 of 2 scores are inf"),
        (["a", "b"], [0.0], "must be numbers"),
    ],
)
def test_compute_eer_refuses_inputs_that_give_a_wrong_number(bona, spoof, match):
    with pytest.raises(ValueError, match=match):
        metrics.compute_eer(bona, spoof)


def test_get_eer_scores_trials_with_the_bonafide_log_odds():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    logits = rng.normal(0, 1, (500, 2)) + np.stack([1 - labels, labels], axis=1)
    log_odds = logits[:, 1] - logits[:, 0]
    expected = metrics.compute_eer(log_odds[labels == 1], log_odds[labels == 0])[0]
    assert metrics.get_eer(logits, labels) == expected
    p_bona = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)  # same ranking, same EER
    assert metrics.compute_eer(p_bona[labels == 1], p_bona[labels == 0])[0] == pytest.approx(expected)


def test_get_eer_with_spoof_column_as_score_inverts_the_curve():
    """The pitfall the docstring warns about: scoring with the spoof logit gives about 1 - EER."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    logits = rng.normal(0, 1, (2000, 2)) + 1.5 * np.stack([1 - labels, labels], axis=1)
    eer = metrics.get_eer(logits, labels)
    assert eer < 0.2 and metrics.get_eer(logits[:, ::-1], labels) == pytest.approx(1 - eer, abs=2e-3)


def test_get_eer_accepts_torch_tensors_with_grad_and_bfloat16():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 300)
    logits = rng.normal(0, 1, (300, 2)) + np.stack([1 - labels, labels], axis=1)
    expected = metrics.get_eer(logits.astype(np.float32), labels)
    t = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
    assert metrics.get_eer(t, torch.tensor(labels)) == expected
    t16 = torch.tensor(logits, dtype=torch.bfloat16)
    assert metrics.get_eer(t16, torch.tensor(labels)) == metrics.get_eer(t16.double().numpy(), labels)


@pytest.mark.parametrize(
    "logits,labels,match",
    [
        ([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]], [1, 1, 1], r"no spoof \(label 0\) trials"),
        ([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]], [0, 0, 0], r"no bona fide \(label 1\) trials"),
        ([[0.0, np.nan], [0.0, 2.0], [0.0, 3.0]], [1, 0, 0], r"1 of 3 logit rows are NaN \(first: row 0\)"),
        ([[0.0, np.inf], [0.0, 2.0], [0.0, 3.0]], [1, 0, 0], r"1 of 3 logit rows are inf"),
        ([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], [1, 0, 0], "only 1 distinct score"),
        ([[0.0, 1.0], [0.0, 2.0], [0.0, 2.0], [0.0, 1.0]], [1, 0, 1, 0], "only 2 distinct score"),
        ([1.0, 2.0, 3.0], [1, 0, 0], r"logits must have shape \(N, 2\)"),
        ([[0.0, 1.0, 2.0]] * 3, [1, 0, 0], r"logits must have shape \(N, 2\)"),
        ([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]], [1, 0], r"labels must have shape \(3,\)"),
        ([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]], [1, 0, 2], "labels must be 1 .bona fide. or 0"),
    ],
)
def test_get_eer_refuses_inputs_that_would_give_a_wrong_number(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        metrics.get_eer(np.array(logits), np.array(labels))


# --- min t-DCF ---


@pytest.mark.parametrize("negate", [False, True], ids=["bonafide-high", "negated"])
@pytest.mark.parametrize("tied", [False, True], ids=["continuous", "integer-ties"])
def test_tdcf_curve_equals_the_official_legacy_code_on_random_scores(tied, negate):
    rng = np.random.default_rng(99 + 2 * tied + negate)
    for _ in range(100):
        bona, spoof = _random_scores(rng, tied, negate)
        if np.unique(np.concatenate((bona, spoof))).size < 3:
            continue
        asv = _random_asv(rng, tied)
        curve, thresholds = metrics.compute_tdcf_curve(bona, spoof, asv)
        official_curve, official_thresholds = _official_tdcf_legacy(bona, spoof, asv.target, asv.nontarget, asv.spoof)
        np.testing.assert_array_equal(curve, official_curve)
        np.testing.assert_array_equal(thresholds, official_thresholds)
        assert metrics.compute_min_tdcf(bona, spoof, asv) == official_curve.min()


def test_cost_model_is_the_asvspoof2019_one():
    m = metrics.ASVSPOOF2019_COST_MODEL
    assert (m.p_spoof, m.p_tar, m.p_non) == pytest.approx((0.05, 0.9405, 0.0095), abs=1e-15)
    assert (m.c_miss_asv, m.c_fa_asv, m.c_miss_cm, m.c_fa_cm) == (1, 10, 1, 10)


def test_cost_model_with_priors_not_summing_to_one_is_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.CostModel(0.05, 0.9, 0.01, 1, 10, 1, 10)


def test_min_tdcf_refuses_an_asv_that_rejects_every_spoof():
    asv = metrics.AsvScores(np.array([5.0, 6.0, 7.0]), np.array([0.0, 1.0, 2.0]), np.array([-9.0, -8.0]))
    with pytest.raises(ValueError, match=r"C2 = 0 must be positive"):
        metrics.compute_min_tdcf([1.0, 2.0, 3.0], [0.0, 0.5], asv)


def test_min_tdcf_refuses_hard_decisions():
    asv = metrics.AsvScores(np.array([5.0, 6.0, 7.0]), np.array([0.0, 1.0, 2.0]), np.array([4.0, 5.5]))
    with pytest.raises(ValueError, match="only 2 distinct"):
        metrics.compute_min_tdcf([1.0, 1.0, 1.0], [0.0, 0.0], asv)


@pytest.mark.parametrize("system,eer,min_tdcf", [("B01", B01_EER, B01_MIN_TDCF), ("B02", B02_EER, B02_MIN_TDCF)])
def test_baseline_eer_and_min_tdcf_match_the_organisers_numbers(protocols, system, eer, min_tdcf):
    scores = metrics.read_score_file(protocols / "baseline_cm_scores" / f"{system}_LA_primary_eval.txt")
    asv = metrics.read_asv_scores(protocols / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt")
    result = metrics.evaluate_scores(scores, asv)
    assert result["eer"] == pytest.approx(eer, abs=1e-6)
    assert result["min_tdcf"] == pytest.approx(min_tdcf, abs=1e-6)


def test_organisers_eval_asv_scores_read_by_key(protocols):
    asv = metrics.read_asv_scores(protocols / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt")
    assert asv.target.size + asv.nontarget.size + asv.spoof.size == 102_579
    rates = metrics.compute_asv_error_rates(asv)
    assert rates["eer"] == pytest.approx(0.0245778, abs=1e-7)  # the organisers' ASV: 2.48 % EER


def test_asv_score_line_with_a_bad_key_names_file_and_line(tmp_path):
    p = tmp_path / "asv.txt"
    p.write_text("bonafide target 1.0\nA07 spoofed 2.0\n")
    with pytest.raises(ValueError, match=r"asv.txt line 2: key 'spoofed' is not one of target, nontarget, spoof"):
        metrics.read_asv_scores(p)


# --- ASV score lookup under --data-root ---


def _write_asv(folder: Path, split: str = "eval") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"ASVspoof2019.LA.asv.{split}.gi.trl.scores.txt"
    p.write_text("bonafide target 5.0\nbonafide target 6.0\nbonafide nontarget 1.0\nbonafide nontarget 0.0\n")
    with open(p, "a") as f:
        f.write("A07 spoof 5.5\nA08 spoof 0.5\n")
    return p


@pytest.mark.parametrize(
    "root,scores_dir",
    [
        ("LA", "LA/ASVspoof2019_LA_asv_scores"),  # the official LA/ folder
        (".", "LA/ASVspoof2019_LA_asv_scores"),  # its parent
        (".", "LA/LA/ASVspoof2019_LA_asv_scores"),  # Kaggle copy
        ("flat", "flat"),  # a folder holding the score files
    ],
    ids=["official-LA", "parent", "kaggle-LA-LA", "flat"],
)
def test_find_asv_scores_accepts_the_known_layouts(tmp_path, root, scores_dir):
    expected = _write_asv(tmp_path / scores_dir)
    assert metrics.find_asv_scores(tmp_path / root, "eval") == expected


def test_find_asv_scores_miss_lists_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"looked in .*LA/LA/ASVspoof2019_LA_asv_scores"):
        metrics.find_asv_scores(tmp_path, "dev")


def test_find_asv_scores_refuses_the_train_split(tmp_path):
    with pytest.raises(ValueError, match="only for the dev and eval"):
        metrics.find_asv_scores(tmp_path, "train")


def test_find_asv_scores_in_the_real_official_layout(protocols):
    mini = protocols.parents[1] / "asvspoof2019_la_mini"
    if not mini.is_dir():
        pytest.skip("asvspoof2019_la_mini absent")
    for root in (mini, mini / "LA", protocols):
        assert metrics.find_asv_scores(root, "dev").name == "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"


# --- per-attack EER ---


def test_per_attack_eer_on_b01_has_the_13_eval_attacks(protocols):
    scores = metrics.read_score_file(protocols / "baseline_cm_scores" / "B01_LA_primary_eval.txt")
    table = metrics.per_attack_eer(scores.score, scores.system, scores.key)
    assert list(table) == [f"A{i:02d}" for i in range(7, 20)]
    bona = scores.bonafide_scores
    assert table["A17"] == metrics.compute_eer(bona, scores.score[scores.system == "A17"])[0]
    assert max(table, key=table.get) == "A13"  # B01 (CQCC-GMM)'s hardest attack
    assert table["A13"] == pytest.approx(0.26154426, abs=1e-8)  # regression value


def test_per_attack_eer_compares_each_attack_with_all_bonafide():
    scores = np.array([5.0, 6.0, 7.0, 1.0, 2.0, 6.5, 9.0])
    systems = np.array(["-", "-", "-", "A01", "A01", "A02", "A02"])
    keys = np.array(["bonafide"] * 3 + ["spoof"] * 4)
    table = metrics.per_attack_eer(scores, systems, keys)
    assert table == {"A01": 0.0, "A02": metrics.compute_eer([5.0, 6.0, 7.0], [6.5, 9.0])[0]}


def test_format_report_lists_eer_tdcf_and_every_attack():
    text = metrics.format_report({"eer": 9.5, "min_tdcf": None, "per_attack": {"A07": 0.0, "A08": 1.25}}, "t")
    assert "EER" in text and "n/a" in text and "A07" in text and "1.250" in text


# --- score files ---


def test_score_file_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    scores = rng.normal(0, 1, 50)
    utts = [f"LA_E_{i:07d}" for i in range(50)]
    systems = ["-" if i % 3 == 0 else "A07" for i in range(50)]
    keys = ["bonafide" if s == "-" else "spoof" for s in systems]
    path = metrics.write_score_file(tmp_path / "sub" / "scores.txt", utts, systems, keys, scores)
    back = metrics.read_score_file(path)
    assert back.utt_id.tolist() == utts and back.system.tolist() == systems and back.key.tolist() == keys
    np.testing.assert_array_equal(back.score, scores)
    assert path.read_text().splitlines()[0] == f"LA_E_0000000 - bonafide {float(scores[0])!r}"
    assert [p.name for p in path.parent.iterdir()] == ["scores.txt"]  # no temporary file left behind


def test_failed_score_file_write_keeps_the_old_file(tmp_path):
    path = metrics.write_score_file(tmp_path / "s.txt", ["u1", "u2"], ["-", "A07"], ["bonafide", "spoof"], [1.0, 0.0])
    before = path.read_text()
    with pytest.raises(ValueError, match="duplicate utt_id u1"):
        metrics.write_score_file(path, ["u1", "u1"], ["-", "A07"], ["bonafide", "spoof"], [1.0, 0.0])
    assert path.read_text() == before and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    "utts,keys,match",
    [
        (["u1", "u 2"], ["bonafide", "spoof"], "contains whitespace"),
        (["u1", "u2"], ["bonafide", "fake"], "key 'fake' is not bonafide or spoof"),
        (["u1"], ["bonafide", "spoof"], "must be 1-D of one length"),
    ],
)
def test_write_score_file_refuses_malformed_entries(tmp_path, utts, keys, match):
    with pytest.raises(ValueError, match=match):
        metrics.write_score_file(tmp_path / "s.txt", utts, ["-", "A07"], keys, [1.0, 0.0])


def test_six_column_baseline_form_is_read(tmp_path):
    p = tmp_path / "b.txt"
    p.write_text("LA_0039 LA_E_2834763 - A11 spoof -0.536935\nLA_0039 LA_E_1 - - bonafide 2.5\n")
    s = metrics.read_score_file(p)
    assert s.utt_id.tolist() == ["LA_E_2834763", "LA_E_1"] and s.system.tolist() == ["A11", "-"]
    assert s.key.tolist() == ["spoof", "bonafide"] and s.score.tolist() == [-0.536935, 2.5]


def test_real_baseline_score_file_is_read_in_protocol_order(protocols):
    s = metrics.read_score_file(protocols / "baseline_cm_scores" / "B01_LA_primary_eval.txt")
    assert len(s) == 71_237 and (s.bonafide_scores.size, s.spoof_scores.size) == (7_355, 63_882)
    assert (s.utt_id[0], s.system[0], s.key[0], s.score[0]) == ("LA_E_2834763", "A11", "spoof", -0.536935)


@pytest.mark.parametrize(
    "text,match",
    [
        ("u1 - bonafide 1.0\nu2 A07 spoof\n", r"s.txt line 2: expected 4 fields .* or 6 .*, got 3: 'u2 A07 spoof'"),
        ("u1 - bonafide 1.0\nu2 A07 spoof x1\n", r"s.txt line 2: score 'x1' is not a number"),
        ("u1 - bonafide 1.0\nu2 A07 spof 1.0\n", r"s.txt line 2: key 'spof' is not bonafide or spoof"),
        ("u1 - bonafide 1.0\n\nu1 A07 spoof 1.0\n", r"s.txt line 3: duplicate utt_id u1 \(first on line 1\)"),
        ("\n", "s.txt has no score lines"),
    ],
)
def test_malformed_score_file_line_names_file_and_line(tmp_path, text, match):
    p = tmp_path / "s.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        metrics.read_score_file(p)


def test_missing_score_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="score file .*nope.txt not found"):
        metrics.read_score_file(tmp_path / "nope.txt")


def test_nan_scores_are_counted_and_the_first_utt_named(protocols):
    s = metrics.read_score_file(protocols / "baseline_cm_scores" / "B01_LA_primary_eval.txt")
    s.score[[0, 10, 20]] = np.nan
    with pytest.raises(ValueError) as e:
        metrics.evaluate_scores(s)
    assert str(e.value) == "3 of 71,237 scores are NaN (first: LA_E_2834763); EER and t-DCF need finite scores"


def test_evaluate_scores_without_bonafide_trials_names_the_file(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("u1 A07 spoof 1.0\nu2 A07 spoof 2.0\nu3 A07 spoof 3.0\n")
    with pytest.raises(ValueError, match="s.txt has no bonafide trials"):
        metrics.evaluate_scores(metrics.read_score_file(p))


# --- DET plot ---


def test_det_plot_is_a_png_with_one_or_several_systems(tmp_path):
    rng = np.random.default_rng(4)
    curves = {"A": (rng.normal(2, 1, 300), rng.normal(0, 1, 900)), "B": (rng.normal(9, 1, 50), rng.normal(0, 1, 50))}
    for name, subset in (("one.png", {"A": curves["A"]}), ("two.png", curves)):
        path = metrics.plot_det(subset, tmp_path / name, title="test")
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "two.png"]


def test_det_plot_without_curves_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        metrics.plot_det({}, tmp_path / "x.png")


# --- command line ---


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(METRICS_PY), *args], cwd=cwd, capture_output=True, text=True)


def test_cli_json_on_b01_with_data_root_gives_eer_tdcf_and_attacks(protocols, tmp_path):
    b01 = protocols / "baseline_cm_scores" / "B01_LA_primary_eval.txt"
    run = _run_cli("--scores", str(b01), "--data-root", str(protocols), "--split", "eval", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert set(result) == {"eer", "min_tdcf", "per_attack"}
    assert result["eer"] == pytest.approx(B01_EER, abs=1e-6)
    assert result["min_tdcf"] == pytest.approx(B01_MIN_TDCF, abs=1e-6)
    assert list(result["per_attack"]) == [f"A{i:02d}" for i in range(7, 20)]


def test_cli_text_report_infers_the_split_and_writes_the_det(protocols, tmp_path):
    b02 = protocols / "baseline_cm_scores" / "B02_LA_primary_eval.txt"
    asv = protocols / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    for args in (("--data-root", str(protocols)), ("--asv-scores", str(asv))):
        run = _run_cli("--scores", str(b02), *args, "--det", "det.png", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "8.089825 %" in run.stdout and "0.211053" in run.stdout and "A19" in run.stdout
        assert (tmp_path / "det.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_without_asv_scores_reports_eer_only(tmp_path):
    p = metrics.write_score_file(tmp_path / "s.txt", ["a", "b", "c", "d"], ["-", "-", "A07", "A08"],
                                 ["bonafide", "bonafide", "spoof", "spoof"], [2.0, 1.0, 1.5, -1.0])  # fmt: skip
    run = _run_cli("--scores", str(p), "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    # A07 alone: DET points (FRR, FAR) = (0, 1), (.5, 1), (.5, 0), (1, 0); the first |FRR - FAR| minimum is (.5, 1)
    assert json.loads(run.stdout) == {"eer": 50.0, "min_tdcf": None, "per_attack": {"A07": 75.0, "A08": 0.0}}


def test_cli_data_root_in_kaggle_layout_is_found(tmp_path):
    _write_asv(tmp_path / "LA" / "LA" / "ASVspoof2019_LA_asv_scores")
    p = metrics.write_score_file(tmp_path / "s.txt", ["LA_E_1", "LA_E_2", "LA_E_3", "LA_E_4"], ["-", "-", "A07", "A07"],
                                 ["bonafide", "bonafide", "spoof", "spoof"], [2.0, 1.0, 1.5, -1.0])  # fmt: skip
    run = _run_cli("--scores", str(p), "--data-root", str(tmp_path), "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["min_tdcf"] is not None


def test_cli_bad_score_file_exits_1_with_one_line_naming_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("LA_E_1 - bonafide 1.0\nLA_E_2 A07 spoof\n")
    run = _run_cli("--scores", str(p), cwd=tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("metrics.py: error: bad.txt line 2: expected 4 fields")
    debug = _run_cli("--scores", str(p), "--debug", cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_cli_data_root_without_asv_scores_exits_1_listing_the_places(tmp_path):
    p = metrics.write_score_file(tmp_path / "s.txt", ["LA_D_1", "LA_D_2", "LA_D_3"], ["-", "A01", "A02"],
                                 ["bonafide", "spoof", "spoof"], [2.0, 1.0, 0.0])  # fmt: skip
    run = _run_cli("--scores", str(p), "--data-root", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 1 and "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt" in run.stderr
    assert "looked in" in run.stderr and run.stderr.count("\n") == 1


def test_cli_data_root_with_mixed_splits_asks_for_split(tmp_path):
    p = metrics.write_score_file(tmp_path / "s.txt", ["LA_D_1", "LA_E_2", "LA_E_3"], ["-", "A01", "A02"],
                                 ["bonafide", "spoof", "spoof"], [2.0, 1.0, 0.0])  # fmt: skip
    run = _run_cli("--scores", str(p), "--data-root", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 1 and "pass --split dev or --split eval" in run.stderr


# --- speed (printed, not asserted) ---


def test_speed_on_71237_eval_scores_is_printed(protocols, capsys):
    t0 = time.perf_counter()
    scores = metrics.read_score_file(protocols / "baseline_cm_scores" / "B01_LA_primary_eval.txt")
    asv = metrics.read_asv_scores(protocols / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt")
    t1 = time.perf_counter()
    metrics.compute_eer(scores.bonafide_scores, scores.spoof_scores)
    t2 = time.perf_counter()
    metrics.compute_min_tdcf(scores.bonafide_scores, scores.spoof_scores, asv)
    t3 = time.perf_counter()
    metrics.evaluate_scores(scores, asv)
    t4 = time.perf_counter()
    with capsys.disabled():
        print(
            f"\nmetrics on {len(scores):,} scores: read CM + ASV files {t1 - t0:.3f} s, EER {t2 - t1:.4f} s, "
            f"min t-DCF {t3 - t2:.4f} s, evaluate_scores {t4 - t3:.4f} s"
        )
