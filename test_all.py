"""Every test of the collection, in sections that follow the scripts. Run: python -m pytest test_all.py"""

from pathlib import Path

import pytest
import torch

import data


def shared_data() -> Path | None:
    for p in Path(__file__).resolve().parents:
        if (p / "shared" / "data").is_dir():
            return p / "shared" / "data"
    return None


SHARED = shared_data()
MINI = SHARED / "asvspoof2019_la_mini" / "LA" if SHARED else None
needs_mini = pytest.mark.skipif(MINI is None or not MINI.is_dir(), reason="../shared/data absent")


# --- data.py ---


@needs_mini
@pytest.mark.parametrize("frontend,shape", [("stft", (1, 863, 600)), ("mel", (1, 20, 600))])
def test_item_shapes_on_real_files(frontend, shape):
    fe = data.make_frontend(frontend)
    ds = data.ASVspoof2019LA(MINI, "dev", fe.num_samples(600), frontend=fe)
    x, label, utt_id, system, speaker = ds[0]
    assert tuple(x.shape) == shape and label in (0, 1) and utt_id.startswith("LA_D_")


def test_protocol_line_with_four_fields_names_the_line(tmp_path):
    p = tmp_path / "ASVspoof2019.LA.cm.train.trn.txt"
    p.write_text("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - bonafide\n")
    with pytest.raises(ValueError, match=r"line 2: expected 5 fields"):
        data.read_cm_protocol(p)


def test_fix_length_repeats_short_and_crops_long():
    w = torch.arange(5.0)
    assert data.fix_length(w, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert data.fix_length(w, 7, pad="zeros").tolist() == [0, 1, 2, 3, 4, 0, 0]
    assert data.fix_length(w, 3).tolist() == [0, 1, 2]
