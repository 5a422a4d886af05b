"""corpora.py -- where the labels are: one reader per corpus, each returning the same entries.

Inside:
  * `ProtocolEntry`, the one entry type every reader returns and the Dataset takes (utt id, key, system, speaker,
    the audio's path when it is not the official place);
  * `check_utt_id` / `LALayout.entry_path`: the one id-to-path rule, which no reader can escape (an id is a plain
    file name: no folder separator, no '..');
  * ASVspoof 2019 LA: `parse_protocol_line`, `read_cm_protocol`, `LALayout` (official, parent and Kaggle layouts),
    `find_la_root`, `find_utterance`, `split_of_utt` (the split an utt id's prefix names);
  * vocv4 (project09-voc.v4, Wang & Yamagishi, ICASSP 2023, arXiv:2210.10570): `Vocv4Entry`, `read_vocv4_protocol`,
    `vocv4_files`, `find_vocv4_files`, `find_vocv4_root`.

The database: ASVspoof 2019 LA (Wang et al., "ASVspoof 2019: a large-scale public database of synthesized,
converted and replayed speech", CSL 2020; Todisco et al., Interspeech 2019), ODC-By 1.0, from Edinburgh
DataShare (https://datashare.ed.ac.uk/handle/10283/3336, DOI 10.7488/ds/2555): 16 kHz mono FLAC, train 25,380
files (A01-A06), dev 24,844 (A01-A06), eval 71,237 (A07-A19), 20 / 10+10 / 48+19 speakers (VCTK).

Imports only the standard library and cli.py: reading a protocol needs no torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cli import text_lines

LABEL_SPOOF, LABEL_BONAFIDE = 0, 1
SPLITS = ("train", "dev", "eval")
PROTOCOL_FILES = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"
ATTACKS = tuple(f"A{i:02d}" for i in range(1, 20))  # A01-A06 in train/dev, A07-A19 in eval (A16 = A04, A19 = A06)
SPLIT_PREFIXES = {"LA_T_": "train", "LA_D_": "dev", "LA_E_": "eval"}  # the utt id's prefix names its split


# ----------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class ProtocolEntry:
    """One line of an official CM protocol: `SPEAKER UTT_ID - SYSTEM KEY`."""

    speaker: str  # LA_0079
    utt_id: str  # LA_T_1138215
    system: str  # "-" for bona fide, A01..A19 for spoofs (a vocoder's name for copy-synthesised training spoofs)
    key: str  # "bonafide" | "spoof"
    path: str | None = None  # audio outside the split's flac/ folder (vocoded copies); None: the official place

    @property
    def label(self) -> int:
        return LABEL_BONAFIDE if self.key == "bonafide" else LABEL_SPOOF


def parse_protocol_line(line: str, where: str) -> ProtocolEntry:
    """Parse one CM protocol line; `where` ("file line N") prefixes any error.

    Raises:
        ValueError: not 5 fields, a key other than bonafide/spoof, or a system other than '-' (bona fide) or
            A01..A19 (spoof); the message holds `where`, the line and what was expected.
    """
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(
            f"{where}: expected 5 fields (speaker utt_id - system key), got {len(fields)}: {line.strip()!r}"
        )
    speaker, utt_id, _env, system, key = fields
    check_utt_id(utt_id, where)
    if key not in ("bonafide", "spoof"):
        raise ValueError(f"{where}: key must be 'bonafide' or 'spoof', got {key!r}: {line.strip()!r}")
    if (key == "bonafide" and system != "-") or (key == "spoof" and system not in ATTACKS):
        raise ValueError(
            f"{where}: system must be '-' for bonafide and A01..A19 for spoof, got {system!r} with key {key!r}: "
            f"{line.strip()!r}"
        )
    return ProtocolEntry(speaker, utt_id, system, key)


def read_cm_protocol(path: str | os.PathLike) -> list[ProtocolEntry]:
    """Read an official ASVspoof 2019 LA CM protocol into records, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line (names file, line number, the line and what was expected) or a repeated utt id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CM protocol not found: {path}")
    entries, seen = [], {}
    for number, line in text_lines(path, "CM protocol"):
        if not line.strip():
            continue
        entry = parse_protocol_line(line, f"{path.name} line {number}")
        if entry.utt_id in seen:
            raise ValueError(f"{path.name} line {number}: utt id {entry.utt_id} already on line {seen[entry.utt_id]}")
        seen[entry.utt_id] = number
        entries.append(entry)
    if not entries:
        raise ValueError(f"{path}: the protocol is empty")
    return entries


# ----------------------------------------------------------------------------- on-disk layouts


@dataclass(frozen=True)
class LALayout:
    """The official `LA/` folder: protocols, per-split `flac/` folders and the organisers' ASV scores."""

    root: Path

    def protocol_path(self, split: str) -> Path:
        check_split(split)
        return self.root / PROTOCOL_DIR / PROTOCOL_FILES[split]

    def audio_dir(self, split: str) -> Path:
        check_split(split)
        return self.root / f"ASVspoof2019_LA_{split}" / "flac"

    def audio_path(self, split: str, utt_id: str) -> Path:
        return self.audio_dir(split) / f"{check_utt_id(utt_id, 'utt id')}.flac"

    def entry_path(self, split: str, entry: ProtocolEntry) -> Path:
        """Where a protocol entry's audio is: its own `path` (a vocoded copy in the cache), else the split's flac/."""
        return Path(entry.path) if entry.path else self.audio_path(split, entry.utt_id)

    def protocol(self, split: str) -> list[ProtocolEntry]:
        return read_cm_protocol(self.protocol_path(split))


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def find_la_root(data_root: str | os.PathLike | None) -> LALayout:
    """Locate the official `LA/` folder from what a user points at.

    Accepts the `LA/` folder itself, its parent (official LA.zip extracted), or the Kaggle copy whose
    `LA/LA/` nesting is doubled.

    Raises:
        FileNotFoundError: one message listing every place looked in.
    """
    if data_root is None:
        raise FileNotFoundError("no --data-root given: point it at the ASVspoof 2019 LA folder (or its parent)")
    base = Path(data_root).expanduser()
    if not base.exists():
        raise FileNotFoundError(f"--data-root {base} does not exist")
    candidates = [base, base / "LA", base / "LA" / "LA"]
    for candidate in candidates:
        if (candidate / PROTOCOL_DIR).is_dir():
            return LALayout(candidate)
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"--data-root {base} has no {PROTOCOL_DIR}/ (looked in {looked}): expected the official LA layout "
        "or the Kaggle copy; point --data-root at the folder that holds it"
    )


def find_utterance(layout: LALayout, utt_id: str) -> tuple[str, ProtocolEntry]:
    """The split and protocol entry of `utt_id`, searching every CM protocol present (its own split first).

    Raises:
        ValueError: the utt id is in no protocol (the message names the protocols searched).
    """
    guess = split_of_utt(utt_id)
    searched = []
    for split in sorted(SPLITS, key=lambda s: s != guess):
        path = layout.protocol_path(split)
        if path.is_file():
            searched.append(path.name)
            for e in read_cm_protocol(path):
                if e.utt_id == utt_id:
                    return split, e
    raise ValueError(
        f"utt id {utt_id!r} is in no CM protocol under {layout.root / PROTOCOL_DIR} "
        f"(searched: {', '.join(searched) or 'none found'}); expected an id such as LA_T_4179989"
    )


def spread_entries(entries: Sequence, limit: int) -> list:
    """`limit` entries spread evenly over a protocol (protocols are sorted by class, so not the first N); all of
    them when `limit` is 0 or covers the whole protocol. The one rule behind --limit-train / --limit-dev and bench."""
    if not limit or limit >= len(entries):
        return list(entries)
    return [entries[i * len(entries) // limit] for i in range(limit)]


def split_of_utt(utt_id: str) -> str | None:
    """The split an ASVspoof 2019 LA utt id's prefix names (LA_T_ train, LA_D_ dev, LA_E_ eval), else None."""
    return SPLIT_PREFIXES.get(utt_id[:5])


def check_utt_id(utt_id: str, where: str) -> str:
    """An utt id as the one id-to-path rule allows it: a plain file name, so `<folder>/<id>.flac` stays in <folder>.

    Raises:
        ValueError: naming `where` (file and line, or the flag): an id holding a folder separator, a NUL byte, or
            that is '.' / '..' -- such an id would read audio outside the data root.
    """
    if not utt_id or utt_id in (".", "..") or "/" in utt_id or "\\" in utt_id or "\0" in utt_id:
        raise ValueError(f"{where}: utt id {utt_id!r} is not a plain file name (expected e.g. LA_T_4179989, no '/', "
                         "'\\' or '..'): it would name audio outside the data root")  # fmt: skip
    return utt_id


# ----------------------------------------------------------------------------- vocv4 (project09-voc.v4): vocoded copies of LA bona fide


@dataclass(frozen=True)
class Vocv4Entry:
    """One vocv4 protocol line: `LA_0079 hifigan_LA_T_1703395 - hifigan spoof`."""

    speaker: str  # LA_0079
    name: str  # hifigan_LA_T_1703395 (the wav's stem)
    vocoder: str  # hifigan
    utt_id: str  # LA_T_1703395, the ASVspoof 2019 bona fide original


def read_vocv4_protocol(path: str | os.PathLike) -> list[Vocv4Entry]:
    """Read vocv4's protocol.txt; lines that are not vocoded spoofs (bona fide lines) are skipped.

    Raises:
        FileNotFoundError: no such file. ValueError: a malformed line, naming file, line number and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocv4 protocol not found: {path}")
    entries = []
    for number, line in text_lines(path, "vocv4 protocol"):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"{path.name} line {number}: expected 5 fields (speaker name - vocoder key), "
                             f"got {len(fields)}: {line.strip()!r}")  # fmt: skip
        speaker, name, _, vocoder, key = fields
        if key != "spoof":
            continue
        m = re.search(r"(LA_[TDE]_\d{7})$", name)
        if m is None:
            raise ValueError(f"{path.name} line {number}: {name!r} does not end in an LA utterance id "
                             "(expected <vocoder>_LA_T_1234567)")  # fmt: skip
        entries.append(Vocv4Entry(speaker, name, vocoder, m.group(1)))
    return entries


def vocv4_files(
    root: str | os.PathLike, vocoders: Sequence[str] | None = None, utt_ids: set[str] | None = None
) -> list[tuple[Vocv4Entry, Path]]:
    """Every vocoded file of an extracted vocv4 folder (optionally only some vocoders, or copies of some
    utterances), with its wav path.

    Args:
        root: the `voc.v4` folder, or a folder above it that `find_vocv4_root` accepts.
    Raises:
        FileNotFoundError: no voc.v4 folder, or a listed wav missing. ValueError: a vocoder it does not list.
    """
    folder = find_vocv4_root(root)
    entries = read_vocv4_protocol(folder / "protocol.txt")
    if vocoders:
        listed = sorted({e.vocoder for e in entries})
        unknown = [v for v in vocoders if v not in listed]
        if unknown:
            raise ValueError(f"{folder / 'protocol.txt'} lists no {', '.join(unknown)} files (vocoders: "
                             f"{', '.join(listed)})")  # fmt: skip
        entries = [e for e in entries if e.vocoder in vocoders]
    if utt_ids is not None:
        entries = [e for e in entries if e.utt_id in utt_ids]
    out = []
    for e in entries:
        path = folder / "wav" / f"{e.name}.wav"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {folder / 'protocol.txt'} but missing")
        out.append((e, path))
    return out


def find_vocv4_files(root: str | os.PathLike, utt_id: str, vocoders: Sequence[str]) -> dict[str, Path]:
    """Paths of `utt_id`'s vocoded copies in a vocv4 folder, one per vocoder, in the order of `vocoders`.

    Raises:
        FileNotFoundError / ValueError as `vocv4_files`; ValueError: the utterance has no copy by a vocoder.
    """
    folder = find_vocv4_root(root)
    listed = {e.vocoder for e in read_vocv4_protocol(folder / "protocol.txt") if e.utt_id == utt_id}
    mine = {e.vocoder: p for e, p in vocv4_files(folder, [v for v in vocoders if v in listed], {utt_id})}
    missing = [v for v in vocoders if v not in mine]
    if missing:
        raise ValueError(f"{folder / 'protocol.txt'} lists no {missing[0]} copy of {utt_id} (vocoders listed for it: "
                         f"{', '.join(sorted(listed)) or 'none'})")  # fmt: skip
    return {v: mine[v] for v in vocoders}


def find_vocv4_root(path: str | os.PathLike) -> Path:
    """The `voc.v4/` folder (holding `wav/` and `protocol.txt`) at, under or two levels under `path`.

    Raises:
        FileNotFoundError: listing the places looked in.
    """
    base = Path(path).expanduser()
    candidates = [base, base / "voc.v4", base / "project09-voc.v4" / "voc.v4", *sorted(base.glob("*/voc.v4"))]
    for c in candidates:
        if (c / "protocol.txt").is_file() and (c / "wav").is_dir():
            return c
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise FileNotFoundError(f"no voc.v4 folder with wav/ and protocol.txt at {base} (looked in {looked}); "
                            "get it with: python download.py --source vocv4 --to DIR")  # fmt: skip
