"""Tests of evaluate.py and bench.py (to be merged into test_all.py as their sections).

Run from the repository root: python -m pytest tests_parts/test_evaluate.py -q
A randomly initialised tiny checkpoint (mel front-end, 32 frames) stands in for a trained one: the tests pin the
plumbing (protocol order, resume, files, errors), not the model's accuracy.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import bench
import evaluate
from data import LALayout, find_la_root
from model import build_model

EVALUATE_PY = Path(evaluate.__file__).resolve()


def _evaluate_shared_data() -> Path | None:
    """../shared/data next to the repository, or None when it is absent."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


def _evaluate_save_ckpt(path: Path, frontend: str = "mel", num_frames: int = 32, **drop) -> Path:
    """A random-init LCNN checkpoint with train.py's keys; `drop` names keys to leave out (for error tests)."""
    torch.manual_seed(0)
    in_bins = 20 if frontend == "mel" else 863
    model = build_model({"in_bins": in_bins, "num_frames": num_frames, "dropout": 0.1, "head": "linear"})
    ckpt = {"model": model.state_dict(), "model_args": model.model_args(),
            "args": {"frontend": frontend, "num_frames": num_frames, "pad": "repeat", "recipe": "tiny"},
            "epoch": 1}  # fmt: skip
    for key in drop:
        ckpt.pop(key)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def evaluate_ckpt(tmp_path_factory) -> Path:
    return _evaluate_save_ckpt(tmp_path_factory.mktemp("evaluate_ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def evaluate_mini() -> Path:
    shared = _evaluate_shared_data()
    root = shared / "asvspoof2019_la_mini" / "LA" if shared else None
    if root is None or not root.is_dir():
        pytest.skip("../shared/data/asvspoof2019_la_mini absent")
    return root


@pytest.fixture
def evaluate_tree(tmp_path) -> LALayout:
    """A generated 12-file eval split in the official layout (no ASV scores)."""
    return bench.generate_la_files(tmp_path / "gen", 12, "eval", workers=1)


class _EvaluateCounting(torch.nn.Module):
    """Wraps a model: counts the items it scores and, past `fail_after` calls, crashes like a killed run."""

    def __init__(self, inner: torch.nn.Module, fail_after: int | None = None):
        super().__init__()
        self.inner, self.fail_after, self.calls, self.items = inner, fail_after, 0, 0

    def forward(self, x):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.items += x.shape[0]
        return self.inner(x)


# --- evaluate.py: a split ---


def test_mini_dev_split_gives_101_lines_in_protocol_order_metrics_and_det(
    evaluate_ckpt, evaluate_mini, tmp_path, capsys
):
    out = tmp_path / "scores.txt"
    evaluate.main(["--ckpt", str(evaluate_ckpt), "--data-root", str(evaluate_mini), "--split", "dev",
                   "--out", str(out), "--num-workers", "1", "--batch-size", "16", "--json"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    lines = [line.split() for line in out.read_text().splitlines()]
    protocol = find_la_root(evaluate_mini).protocol("dev")
    assert len(lines) == 101 == len(protocol)
    assert [(u, s, k) for u, s, k, _ in lines] == [(e.utt_id, e.system, e.key) for e in protocol]
    assert {"eer", "min_tdcf", "per_attack", "scores", "det", "asv_scores", "n_scores", "files_per_s"} <= set(summary)
    assert summary["n_scores"] == 101 and (summary["n_bonafide"], summary["n_spoof"]) == (50, 51)
    assert set(summary["per_attack"]) == {"A01", "A02", "A03", "A04", "A05", "A06"}
    assert summary["min_tdcf"] is not None and 0 <= summary["eer"] <= 100
    assert Path(summary["det"]) == tmp_path / "scores_det.png"
    assert (tmp_path / "scores_det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.partial*"))
    # the score is the bona fide log-odds, as the model computes it
    scorer = evaluate.load_scorer(evaluate_ckpt)
    ds_wave = evaluate.fix_length(evaluate.load_audio(find_la_root(evaluate_mini).audio_path("dev", lines[0][0])),
                                  scorer.num_samples, "repeat")  # fmt: skip
    logits = scorer.logits(ds_wave.unsqueeze(0))[0]
    assert float(lines[0][3]) == pytest.approx(float(logits[1] - logits[0]), abs=1e-5)


def test_report_is_printed_and_default_out_goes_next_to_the_checkpoint(evaluate_ckpt, evaluate_mini, tmp_path, capsys):
    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(evaluate_ckpt.read_bytes())
    evaluate.main(["--ckpt", str(ckpt), "--data-root", str(evaluate_mini), "--split", "dev", "--num-workers", "0"])
    captured = capsys.readouterr()
    assert (tmp_path / "run" / "scores_dev.txt").is_file() and (tmp_path / "run" / "scores_dev_det.png").is_file()
    for text in ("101 scores (50 bona fide, 51 spoof)", "EER", "min t-DCF", "A06", "DET curve written to"):
        assert text in captured.out
    assert "score dev: 101/101" in captured.err and "files/s" in captured.err


def test_resume_scores_only_what_a_killed_run_left(evaluate_ckpt, evaluate_mini, tmp_path):
    out = tmp_path / "scores.txt"
    scorer = evaluate.load_scorer(evaluate_ckpt)
    scorer.model = _EvaluateCounting(scorer.model, fail_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate.score_split(scorer, evaluate_mini, "dev", out, batch_size=10, num_workers=0, save_every=2,
                             progress=False)  # fmt: skip
    partial, meta = evaluate.partial_paths(out)
    assert not out.exists() and meta.is_file()
    assert len(partial.read_text().splitlines()) == 30  # 3 batches scored, kept when the run died
    scorer.model = _EvaluateCounting(scorer.model.inner)
    res = evaluate.score_split(scorer, evaluate_mini, "dev", out, batch_size=10, num_workers=0, progress=False)
    assert scorer.model.items == 71 and (res.n_scored, res.n_resumed) == (71, 30)
    assert not partial.exists() and not meta.exists()
    whole = evaluate.score_split(evaluate.load_scorer(evaluate_ckpt), evaluate_mini, "dev", tmp_path / "whole.txt",
                                 batch_size=101, num_workers=0, progress=False)  # fmt: skip
    assert res.scores.utt_id.tolist() == whole.scores.utt_id.tolist()
    np.testing.assert_allclose(res.scores.score, whole.scores.score, atol=1e-5)


def test_partial_scores_of_another_checkpoint_are_refused(evaluate_ckpt, evaluate_mini, tmp_path):
    out = tmp_path / "scores.txt"
    partial, meta = evaluate.partial_paths(out)
    partial.write_text("LA_D_1293230 - bonafide 0.5\n")
    meta.write_text(json.dumps({"checkpoint_sha256": "0" * 64}))
    with pytest.raises(ValueError, match=r"another run .*checkpoint_sha256.*delete it"):
        evaluate.score_split(evaluate.load_scorer(evaluate_ckpt), evaluate_mini, "dev", out, progress=False)


def test_score_file_out_of_protocol_order_names_the_line(evaluate_mini, tmp_path):
    protocol = find_la_root(evaluate_mini).protocol("dev")[:3]
    path = tmp_path / "s.txt"
    order = [protocol[0], protocol[2], protocol[1]]
    path.write_text("".join(f"{e.utt_id} {e.system} {e.key} 0.{i}\n" for i, e in enumerate(order)))
    with pytest.raises(ValueError, match=rf"s.txt line 2: expected '{protocol[1].utt_id} "):
        evaluate.check_score_file(path, protocol)
    with pytest.raises(ValueError, match="has 3 lines, the trial list 2"):
        evaluate.check_score_file(path, order[:2])


def test_unreadable_file_in_a_split_names_it_and_skip_bad_leaves_it_out(evaluate_ckpt, evaluate_tree, tmp_path):
    bad = evaluate_tree.audio_path("eval", "LA_E_1000003")
    bad.write_bytes(b"not audio")
    scorer = evaluate.load_scorer(evaluate_ckpt)
    with pytest.raises(RuntimeError, match=r"LA_E_1000003.flac: cannot decode audio .*--skip-bad"):
        evaluate.score_split(scorer, evaluate_tree, "eval", tmp_path / "s.txt", batch_size=2, num_workers=1,
                             progress=False)  # fmt: skip
    assert len(evaluate.partial_paths(tmp_path / "s.txt")[0].read_text().splitlines()) == 3  # all scored before it
    res = evaluate.score_split(scorer, evaluate_tree, "eval", tmp_path / "s.txt", batch_size=2, num_workers=1,
                               skip_bad=True, progress=False)  # fmt: skip
    assert res.skipped == ["LA_E_1000003"] and len(res.scores) == 11
    assert "LA_E_1000003" not in res.scores.utt_id.tolist()


def test_split_without_asv_scores_reports_no_tdcf_but_succeeds(evaluate_ckpt, evaluate_tree, tmp_path, capsys):
    out = tmp_path / "s.txt"
    evaluate.main(["--ckpt", str(evaluate_ckpt), "--data-root", str(evaluate_tree.root.parent), "--out", str(out),
                   "--num-workers", "0", "--full-length", "--save-every", "1", "--device", "cpu"])  # fmt: skip
    captured = capsys.readouterr()
    assert "min t-DCF skipped" in captured.err and "n/a" in captured.out and len(out.read_text().splitlines()) == 12


def test_explicit_asv_scores_and_det_flags(evaluate_ckpt, evaluate_mini, tmp_path, capsys):
    asv = evaluate_mini / "ASVspoof2019_LA_asv_scores" / "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"
    det = tmp_path / "plots" / "det.png"
    evaluate.main(["--ckpt", str(evaluate_ckpt), "--data-root", str(evaluate_mini), "--split", "dev", "--out",
                   str(tmp_path / "s.txt"), "--asv-scores", str(asv), "--det", str(det), "--num-workers", "0",
                   "--precision", "bf16", "--pad", "zeros", "--json"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["asv_scores"] == str(asv) and summary["min_tdcf"] is not None and det.is_file()


# --- evaluate.py: files ---


def test_files_wav_resampled_and_downmixed_and_flac(evaluate_ckpt, evaluate_mini, tmp_path, capsys):
    rng = np.random.default_rng(0)
    mono = (0.1 * rng.standard_normal(int(1.5 * 22050))).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", np.stack([mono, mono], 1), 22050)
    sf.write(tmp_path / "mono.wav", mono, 22050)
    flac = evaluate_mini / "ASVspoof2019_LA_dev" / "flac" / "LA_D_1293230.flac"
    files = [str(tmp_path / "stereo.wav"), str(tmp_path / "mono.wav"), str(flac)]
    evaluate.main(["--ckpt", str(evaluate_ckpt), "--files", *files, "--json"])
    rows = json.loads(capsys.readouterr().out)["files"]
    assert [r["file"] for r in rows] == files
    assert rows[0]["duration_s"] == pytest.approx(1.5, abs=1e-3)
    assert rows[0]["score"] == pytest.approx(rows[1]["score"], abs=1e-5)  # downmix of L = R is the mono file
    for r in rows:
        assert 0 <= r["p_bonafide"] <= 1 and r["verdict"] == ("bonafide" if r["p_bonafide"] >= 0.5 else "spoof")
        assert r["p_bonafide"] == pytest.approx(1 / (1 + np.exp(-r["score"])))  # softmax of the two logits
    evaluate.main(["--ckpt", str(evaluate_ckpt), "--files", str(flac), "--threshold", "0"])
    table = capsys.readouterr().out
    assert "LA_D_1293230.flac" in table and table.rstrip().endswith("bonafide")


def test_full_length_is_the_mean_of_window_logits(evaluate_ckpt):
    scorer = evaluate.load_scorer(evaluate_ckpt)
    w = scorer.num_samples
    wave = torch.randn(2 * w + w // 2)
    windows = torch.stack([wave[:w], wave[w : 2 * w], wave[-w:]])
    torch.testing.assert_close(scorer.logits_full(wave), scorer.logits(windows).mean(0))
    torch.testing.assert_close(scorer.logits_full(wave[: w // 3]), scorer.logits(
        evaluate.fix_length(wave[: w // 3], w, "repeat").unsqueeze(0))[0])  # fmt: skip


def test_unreadable_file_names_it_and_exits_1_unless_skip_bad(evaluate_ckpt, tmp_path, capsys):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"not audio")
    good = tmp_path / "ok.wav"
    sf.write(good, np.zeros(8000, np.float32) + 0.01, 16000)
    with pytest.raises(RuntimeError, match=r"broken.flac: cannot decode audio"):
        evaluate.main(["--ckpt", str(evaluate_ckpt), "--files", str(good), str(bad)])
    evaluate.main(["--ckpt", str(evaluate_ckpt), "--files", str(good), str(bad), "--skip-bad", "--json"])
    rows = json.loads(capsys.readouterr().out)["files"]
    assert "verdict" in rows[0] and "broken.flac" in rows[1]["error"]
    proc = subprocess.run([sys.executable, str(EVALUATE_PY), "--ckpt", str(evaluate_ckpt), "--files", str(bad)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "broken.flac" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- evaluate.py: checkpoints and flags ---


@pytest.mark.parametrize(
    "drop,message",
    [(("model",), "not a train.py checkpoint"), (("args",), r"no args\['frontend'\]")],
)
def test_checkpoint_with_wrong_keys_is_a_clear_error(tmp_path, drop, message):
    ckpt = _evaluate_save_ckpt(tmp_path / "c.pt", **dict.fromkeys(drop))
    with pytest.raises(ValueError, match=message):
        evaluate.load_scorer(ckpt)


def test_foreign_file_as_checkpoint_is_one_clear_line(tmp_path):
    path = tmp_path / "c.pt"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"^--ckpt .*c.pt: torch.load\(weights_only=True\) cannot read it"):
        evaluate.load_scorer(path)


def test_flags_that_contradict_the_checkpoint_are_refused(evaluate_ckpt, monkeypatch):
    with pytest.raises(ValueError, match="trained with --frontend mel"):
        evaluate.main(["--ckpt", str(evaluate_ckpt), "--files", "x.wav", "--frontend", "stft"])
    with pytest.raises(ValueError, match="trained on 32 frames"):
        evaluate.main(["--ckpt", str(evaluate_ckpt), "--files", "x.wav", "--num-frames", "600"])
    monkeypatch.delenv("ASVSPOOF_ROOT", raising=False)
    with pytest.raises(ValueError, match="give --data-root"):
        evaluate.main(["--ckpt", str(evaluate_ckpt)])
    with pytest.raises(ValueError, match="--save-every must be at least 1"):
        evaluate.main(["--ckpt", str(evaluate_ckpt), "--save-every", "0"])
    with pytest.raises(ValueError, match="--threshold"):
        evaluate.main(["--ckpt", str(evaluate_ckpt), "--files", "x.wav", "--threshold", "2"])


# --- bench.py ---


def test_generated_files_are_la_like_and_reused(tmp_path):
    layout = bench.generate_la_files(tmp_path, 20, "eval", workers=1)
    entries = layout.protocol("eval")
    assert len(entries) == 20 and sum(e.key == "bonafide" for e in entries) == 2
    assert {e.system for e in entries if e.key == "spoof"} <= {f"A{a:02d}" for a in range(7, 20)}
    info = [sf.info(layout.audio_path("eval", e.utt_id)) for e in entries]
    assert all(i.samplerate == 16000 and i.channels == 1 and i.format == "FLAC" for i in info)
    assert 2.0 < np.mean([i.duration for i in info]) < 5.5 and min(i.duration for i in info) >= 1.0
    mtime = layout.audio_path("eval", entries[0].utt_id).stat().st_mtime_ns
    bench.generate_la_files(tmp_path, 20, "eval", workers=1)
    assert layout.audio_path("eval", entries[0].utt_id).stat().st_mtime_ns == mtime


def test_bench_runs_every_pipeline_on_a_tiny_config(tmp_path, capsys):
    bench.main(["--device", "cpu", "--what", "all", "--frontend", "mel", "--frames", "32", "--n", "4", "--naive-n", "4",
                "--batch-size", "2", "--train-pool", "6", "--num-workers", "0", "--files-dir", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    for row in ("train  naive", "train  ours", "score  naive", "score  ours", "LA eval (71,237 files)"):
        assert row in out
    assert "samples/s" in out and "peak memory" in out and "x" in out.splitlines()[-2]
    assert (tmp_path / "score" / "scores_eval.txt").is_file()
