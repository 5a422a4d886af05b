"""corpora.py -- where the labels are: one reader per corpus, each returning the same entries.

Inside:
  * `ProtocolEntry`, the one entry type every reader returns and the Dataset takes (utt id, key, system, speaker,
    the audio's path when it is not the official place);
  * `check_utt_id` / `LALayout.entry_path`: the one id-to-path rule, which no reader can escape (an id is a plain
    file name: no folder separator, no '..');
  * ASVspoof 2019 LA: `parse_protocol_line`, `read_cm_protocol`, `LALayout` (official, parent and Kaggle layouts),
    `find_la_root`, `find_utterance`, `split_of_utt` (the split an utt id's prefix names);
  * every corpus (issue 16): `normalise_label` (the one owner of label words), `resolve_audio_path` (the path rule
    for key files that name their audio: inside --data-root), `Corpus`, one reader each -- `read_la19`, `read_la21`
    (LA and DF), `read_itw`, `read_asv5`, `read_kaldi`, `read_folders`, `read_csv` --, `detect_corpus`,
    `read_corpus` (what every script calls), `add_corpus_args` (--corpus, --subset), `find_unkeyed_audio`,
    `write_itw_corpus` / `shared_cross_corpus` (a labelled set in the In-the-Wild format);
  * vocv4 (project09-voc.v4, Wang & Yamagishi, ICASSP 2023, arXiv:2210.10570): `Vocv4Entry`, `read_vocv4_protocol`,
    `vocv4_files`, `find_vocv4_files`, `find_vocv4_root`.

The database: ASVspoof 2019 LA (Wang et al., "ASVspoof 2019: a large-scale public database of synthesized,
converted and replayed speech", CSL 2020; Todisco et al., Interspeech 2019), ODC-By 1.0, from Edinburgh
DataShare (https://datashare.ed.ac.uk/handle/10283/3336, DOI 10.7488/ds/2555): 16 kHz mono FLAC, train 25,380
files (A01-A06), dev 24,844 (A01-A06), eval 71,237 (A07-A19), 20 / 10+10 / 48+19 speakers (VCTK).

Imports only the standard library and cli.py: reading a protocol needs no torch.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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


# ----------------------------------------------------------------------------- problems of a tree


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a tree: which utterance (None for a whole folder or key file), which path, and what is
    wrong. Every corpus's --check, and the Dataset's bad-file policy, report problems as these."""

    utt_id: str | None
    path: str
    problem: str
    missing: bool = False  # the file (or folder) is absent or empty, as opposed to present and unreadable

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


# ----------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class ProtocolEntry:
    """One line of an official CM protocol: `SPEAKER UTT_ID - SYSTEM KEY`."""

    speaker: str  # LA_0079
    utt_id: str  # LA_T_1138215
    system: str  # "-" for bona fide, A01..A19 for spoofs (a vocoder's name for copy-synthesised training spoofs)
    key: str  # "bonafide" | "spoof"
    path: str | None = None  # the audio's absolute path (other corpora, vocoded copies); None: LA's official place
    meta: tuple[tuple[str, str], ...] = ()  # the corpus's other columns as (name, value) pairs: codec, source, ...

    @property
    def label(self) -> int:
        return LABEL_BONAFIDE if self.key == "bonafide" else LABEL_SPOOF

    def column(self, name: str) -> str | None:
        """The value of a metadata column: "attack"/"system", "speaker", "key"/"label", or one of `meta`'s names;
        None when the entry has no such column."""
        if name in ("attack", "system"):
            return self.system
        if name == "speaker":
            return self.speaker
        if name in ("key", "label"):
            return self.key
        return dict(self.meta).get(name)


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


# ----------------------------------------------------------------------------- every corpus: label words, the path rule, readers
# Facts of each format (columns, label words, folders): /work/shared/CORPORA.md, from the organisers' own packages.

BONAFIDE_WORDS = ("bonafide", "bona-fide", "bona_fide", "bona fide", "genuine", "real", "human")
SPOOF_WORDS = ("spoof", "fake", "deepfake", "synthetic")
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3")  # what soundfile reads; other files in a folder are not audio
CORPORA = ("la19", "la21", "df21", "itw", "asv5", "kaldi", "folders", "csv")
LA21_SUBSETS = ("eval", "progress", "hidden_track", "all")  # the 2021 keys' last-but-n column; results use "eval"
CSV_PATH_COLUMNS = ("path", "file", "filename", "filepath", "file_path", "audio", "audio_path", "wav")
CSV_LABEL_COLUMNS = ("label", "key", "class", "cm-label", "target")


def normalise_label(word: str, where: str) -> str:
    """The one owner of label words: bona fide / spoof spelt any common way -> "bonafide" / "spoof".

    Raises:
        ValueError: naming `where` (file and line) and the words accepted.
    """
    w = word.strip().lower()
    if w in BONAFIDE_WORDS:
        return "bonafide"
    if w in SPOOF_WORDS:
        return "spoof"
    raise ValueError(f"{where}: label {word!r} is neither bona fide ({', '.join(BONAFIDE_WORDS)}) nor spoof "
                     f"({', '.join(SPOOF_WORDS)})")  # fmt: skip


def resolve_audio_path(root: Path, name: str, where: str) -> str:
    """The one path rule for key files that name their audio (wav.scp, CSV, meta.csv): a path relative to the data
    root (or absolute), normalised without following links, that must stay inside the root.

    Raises:
        ValueError: naming `where`: an empty name, a NUL byte, a Kaldi pipe, or a path outside the root.
    """
    if not name.strip() or "\0" in name:
        raise ValueError(f"{where}: empty audio path; expected a file path relative to --data-root")
    if name.rstrip().endswith("|"):
        raise ValueError(f"{where}: {name!r} is a command (Kaldi pipe), not a file; expected an audio file path")
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(base, name))
    if os.path.commonpath([full, base]) != base:
        raise ValueError(f"{where}: audio path {name!r} is {full}, outside --data-root {base}; expected a path inside "
                         "it (point --data-root at a folder above both)")  # fmt: skip
    return full


def utt_id_of_path(root: Path, path: str) -> str:
    """The trial id of a corpus that names audio by path: its path under the root without the audio suffix, with
    any whitespace as '_' (score files are whitespace-separated), e.g. spoof/hifigan/a01."""
    rel = Path(os.path.relpath(path, os.path.abspath(root))).as_posix()
    stem = rel[: -len(Path(rel).suffix)] if Path(rel).suffix.lower() in AUDIO_SUFFIXES else rel
    return "_".join(stem.split())


@dataclass
class Corpus:
    """A labelled set of trials, as every reader returns it.

    Attributes:
        name: one of CORPORA.
        root: the folder --data-root points at (resolved to the corpus's own folder).
        key_file: the file the labels come from (named in messages; its digest identifies a scoring run).
        entries: the trials, in key-file order, each with its audio's absolute `path`.
        subset: the LA19 split, LA21/DF21 subset or ASVspoof 5 protocol read; None where there is no choice.
        listed: every audio path the key file names, also outside the chosen subset (to find unkeyed audio).
        problems: what is wrong beyond a line's format -- the same audio under two ids, ids with audio and no key
            or a key and no audio (Kaldi); `data.py --check` reports them with the missing and unreadable files.
        has_asv: the organisers' ASV scores exist for it (ASVspoof 2019 LA dev/eval: the t-DCF).
    """

    name: str
    root: Path
    key_file: Path
    entries: list[ProtocolEntry]
    subset: str | None = None
    listed: frozenset[str] = frozenset()
    problems: list[Problem] = field(default_factory=list)
    has_asv: bool = False

    def describe(self) -> str:
        n_bona = sum(e.key == "bonafide" for e in self.entries)
        subset = f" {self.subset}" if self.subset else ""
        return (f"{self.name}{subset} at {self.root} ({self.key_file.name}): {len(self.entries):,} trials, "
                f"{n_bona:,} bona fide, {len(self.entries) - n_bona:,} spoof")  # fmt: skip

    def columns(self) -> list[str]:
        """The metadata columns a breakdown can use: attack, speaker, then the corpus's own."""
        names = dict.fromkeys(["attack", "speaker"])
        for e in self.entries[:1]:
            names.update(dict.fromkeys(k for k, _ in e.meta))
        return list(names)


def _finish(name: str, root: Path, key_file: Path, entries: list[ProtocolEntry], subset=None, listed=None,
            problems=None, has_asv=False) -> Corpus:  # fmt: skip
    """A Corpus with the audio named twice reported (two ids, one file), and an empty selection refused."""
    if not entries:
        raise ValueError(f"{key_file}: no trials{f' in subset {subset!r}' if subset else ''}; expected at least one "
                         "labelled line")  # fmt: skip
    problems = list(problems or [])
    first: dict[str, str] = {}
    for e in entries:
        if e.path in first:
            problems.append(Problem(e.utt_id, e.path, f"listed twice in {key_file.name}: as {first[e.path]} and "
                                    f"{e.utt_id}; expected each audio file once"))  # fmt: skip
        first.setdefault(e.path, e.utt_id)
    listed = frozenset(listed if listed is not None else (e.path for e in entries))
    return Corpus(name, Path(root), Path(key_file), entries, subset, listed, problems, has_asv)


def _check_new_id(seen: dict[str, int], utt_id: str, where: str, number: int) -> None:
    if utt_id in seen:
        raise ValueError(f"{where}: id {utt_id} already on line {seen[utt_id]}; expected each trial once")
    seen[utt_id] = number


def read_la19(root: str | os.PathLike, split: str = "eval") -> Corpus:
    """ASVspoof 2019 LA, one split (official, parent or Kaggle layout: `find_la_root`); the ASV scores exist for
    dev and eval."""
    layout = find_la_root(root)
    entries = [
        dataclasses.replace(e, path=os.path.abspath(layout.entry_path(split, e))) for e in layout.protocol(split)
    ]
    return _finish("la19", layout.root, layout.protocol_path(split), entries, split, has_asv=split != "train")


def find_la21_files(root: Path, track: str) -> tuple[Path, Path]:
    """(trial_metadata.txt, flac folder) of an ASVspoof 2021 LA/DF tree: keys/ at the root or in <track>-keys-full/,
    audio in ASVspoof2021_<track>_eval/flac (or the doubled ASVspoof2021_<track>_eval/ASVspoof2021_<track>_eval/).

    Raises:
        FileNotFoundError: listing every place looked in.
    """
    keys = [root / "keys" / track / "CM" / "trial_metadata.txt",
            root / f"{track}-keys-full" / "keys" / track / "CM" / "trial_metadata.txt"]  # fmt: skip
    audio = [root / f"ASVspoof2021_{track}_eval" / "flac",
             root / f"ASVspoof2021_{track}_eval" / f"ASVspoof2021_{track}_eval" / "flac"]  # fmt: skip
    key = next((k for k in keys if k.is_file()), None)
    if key is None:
        raise FileNotFoundError(f"--data-root {root} has no ASVspoof 2021 {track} keys (looked for "
                                f"{', '.join(map(str, keys))}); extract {track}-keys-full.tar.gz there")  # fmt: skip
    return key, next((a for a in audio if a.is_dir()), audio[0])


def read_la21(root: str | os.PathLike, track: str = "LA", subset: str = "eval") -> Corpus:
    """ASVspoof 2021 LA (8 columns) or DF (13 columns) eval, from `keys/<track>/CM/trial_metadata.txt`.

    Args:
        track: "LA" or "DF".
        subset: "eval" (the published results' subset, default), "progress", "hidden_track" ("hidden") or "all".
    Raises:
        FileNotFoundError: no keys. ValueError: a line with the wrong field count, an unknown label or subset, an id
            that is not a plain file name, a repeated trial (each naming file and line).
    """
    subset = "hidden_track" if subset == "hidden" else subset
    if subset not in LA21_SUBSETS:
        raise ValueError(f"--subset {subset!r}: ASVspoof 2021 subsets are {', '.join(LA21_SUBSETS)} (default eval)")
    root = Path(root).expanduser()
    key_file, flac = find_la21_files(root, track)
    names = (("codec", "transmission", "attack", "key", "trim", "subset") if track == "LA" else
             ("codec", "source", "attack", "key", "trim", "subset", "vocoder", "task", "team", "gender_pair",
              "language"))  # fmt: skip
    entries, listed, seen = [], [], {}
    for number, line in text_lines(key_file, "ASVspoof 2021 key"):
        fields = line.split()
        if not fields:
            continue
        where = f"{key_file.name} line {number}"
        if len(fields) != 2 + len(names):
            raise ValueError(f"{where}: expected {2 + len(names)} fields (speaker trial {' '.join(names)}) for "
                             f"{track}, got {len(fields)}: {line.strip()!r}")  # fmt: skip
        speaker, trial, *rest = fields
        cols = dict(zip(names, rest))
        check_utt_id(trial, where)
        _check_new_id(seen, trial, where, number)
        key = normalise_label(cols.pop("key"), where)
        path = os.path.abspath(flac / f"{trial}.flac")
        listed.append(path)
        if subset != "all" and cols["subset"] != subset:
            continue
        system = "-" if key == "bonafide" else cols["attack"]
        entries.append(ProtocolEntry(speaker, trial, system, key, path, tuple(cols.items())))
    return _finish(track.lower() + "21", root, key_file, entries, subset, listed)


def find_itw_root(root: Path) -> Path:
    """The In-the-Wild folder holding meta.csv: the root itself or its release_in_the_wild/."""
    for c in (root, root / "release_in_the_wild"):
        if (c / "meta.csv").is_file():
            return c
    raise FileNotFoundError(f"--data-root {root} has no meta.csv (looked in {root}, {root / 'release_in_the_wild'})")


def read_itw(root: str | os.PathLike) -> Corpus:
    """In-the-Wild (Müller et al., Interspeech 2022): `meta.csv`, comma-separated with the header `file,speaker,label`
    (labels `bona-fide` / `spoof`); further header columns (e.g. `source`) become metadata.

    Raises:
        FileNotFoundError: no meta.csv. ValueError: a wrong header, a line with a missing column, an unknown label, a
            repeated file or a path outside the root (each naming file and line).
    """
    folder = find_itw_root(Path(root).expanduser())
    key_file = folder / "meta.csv"
    rows = _read_table(key_file, ",", "In-the-Wild meta.csv")
    header, body = rows[0], rows[1:]
    if [h.strip().lower() for h in header[1][:3]] != ["file", "speaker", "label"]:
        raise ValueError(f"{key_file.name} line {header[0]}: header {','.join(header[1])!r}; expected it to start "
                         "with file,speaker,label (the In-the-Wild meta.csv)")  # fmt: skip
    extra = [h.strip() for h in header[1][3:]]
    entries, seen = [], {}
    for number, fields in body:
        where = f"{key_file.name} line {number}"
        path = resolve_audio_path(folder, fields[0], where)
        utt = utt_id_of_path(folder, path)
        _check_new_id(seen, utt, where, number)
        key = normalise_label(fields[2], where)
        speaker = fields[1].strip() or "-"
        entries.append(ProtocolEntry(speaker, utt, "-" if key == "bonafide" else "spoof", key, path,
                                     tuple(zip(extra, (f.strip() for f in fields[3:])))))  # fmt: skip
    return _finish("itw", folder, key_file, entries)


def _read_table(path: Path, delimiter: str, what: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a delimited text file with a header, every row as long as the header.

    Raises:
        ValueError: no header, or a row with another number of fields (naming file, line, the header).
    """
    import csv

    rows = []
    lines = [(n, line) for n, line in text_lines(path, what) if line.strip()]
    numbers = [n for n, _ in lines]
    for n, fields in zip(numbers, csv.reader((line for _, line in lines), delimiter=delimiter)):
        rows.append((n, fields))
    if not rows:
        raise ValueError(f"{path}: empty; expected a header line and one line a trial")
    width = len(rows[0][1])
    for n, fields in rows[1:]:
        if len(fields) != width:
            raise ValueError(f"{path.name} line {n}: expected {width} fields ({delimiter.join(rows[0][1])}), "
                             f"got {len(fields)}: {delimiter.join(fields)!r}")  # fmt: skip
    return rows


ASV5_COLUMNS = ("speaker", "file", "gender", "codec", "codec_q", "codec_seed", "attack_tag", "attack", "key", "tmp")


def find_asv5_protocol(root: Path, protocol: str | None) -> Path:
    """The ASVspoof 5 protocol to read: `protocol` as a path or a word of its name (train, dev, eval), else the only
    ASVspoof5.*.tsv at the root or in ASVspoof5_protocols/.

    Raises:
        FileNotFoundError: none. ValueError: several and no choice, or a choice that names none / several.
    """
    if protocol and Path(protocol).is_file():
        return Path(protocol)
    found = sorted([*root.glob("ASVspoof5.*.tsv"), *root.glob("ASVspoof5_protocols/ASVspoof5.*.tsv")])
    if not found:
        raise FileNotFoundError(f"--data-root {root} has no ASVspoof5.*.tsv protocol (looked in {root} and "
                                f"{root / 'ASVspoof5_protocols'})")  # fmt: skip
    if protocol:
        found = [f for f in found if protocol in f.name.split(".")]
    if len(found) != 1:
        names = ", ".join(f.name for f in found) or "none"
        raise ValueError(f"--subset {protocol or '(none)'}: {'several' if found else 'no'} ASVspoof 5 protocols match "
                         f"({names}); name one with --subset train|dev|eval or its path")  # fmt: skip
    return found[0]


def index_audio(folder: Path) -> dict[str, str]:
    """{file stem: absolute path} of every audio file under `folder` (one walk; links followed)."""
    out = {}
    for dirpath, _dirs, files in os.walk(folder, followlinks=True):
        for f in files:
            if f.lower().endswith(AUDIO_SUFFIXES):
                out.setdefault(f.rsplit(".", 1)[0], os.path.abspath(os.path.join(dirpath, f)))
    return out


def read_asv5(root: str | os.PathLike, protocol: str | None = None) -> Corpus:
    """ASVspoof 5: a 10-column protocol (space-separated despite .tsv, no header; KEY in column 9), audio found by
    name (`<FLAC_FILE_NAME>.flac`) anywhere under the root (flac_T/, flac_D/, flac_E_*/ ...).

    Raises:
        FileNotFoundError / ValueError: as `find_asv5_protocol`; a line without 10 fields, an unknown label, an id
            that is not a plain file name, a repeated file (each naming file and line).
    """
    root = Path(root).expanduser()
    key_file = find_asv5_protocol(root, protocol)
    audio = index_audio(root)
    entries, seen = [], {}
    for number, line in text_lines(key_file, "ASVspoof 5 protocol"):
        fields = line.split()
        if not fields:
            continue
        where = f"{key_file.name} line {number}"
        if len(fields) != len(ASV5_COLUMNS):
            raise ValueError(f"{where}: expected 10 fields (SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q "
                             f"CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP), got {len(fields)}: {line.strip()!r}")  # fmt: skip
        cols = dict(zip(ASV5_COLUMNS, fields))
        utt = check_utt_id(cols.pop("file"), where)
        _check_new_id(seen, utt, where, number)
        key = normalise_label(cols.pop("key"), where)
        speaker = cols.pop("speaker")
        path = audio.get(utt, os.path.abspath(root / f"{utt}.flac"))  # not found: --check reports it missing here
        entries.append(ProtocolEntry(speaker, utt, "-" if key == "bonafide" else cols["attack"], key, path,
                                     tuple(cols.items())))  # fmt: skip
    subset = next((w for w in ("train", "dev", "eval") if w in key_file.name.split(".")), None)
    return _finish("asv5", root, key_file, entries, subset)


def _read_kaldi_map(path: Path, what: str) -> dict[str, tuple[str, int]]:
    """{utt id: (the rest of the line, line number)} of a Kaldi table (`uttid value`), ids checked and unique."""
    out: dict[str, tuple[str, int]] = {}
    for number, line in text_lines(path, what):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{where}: expected 2 fields (uttid {what.split()[-1]}), got 1: {line.strip()!r}")
        if parts[0] in out:
            raise ValueError(f"{where}: id {parts[0]} already on line {out[parts[0]][1]}; expected each trial once")
        out[parts[0]] = (parts[1], number)
    return out


def read_kaldi(root: str | os.PathLike) -> Corpus:
    """A Kaldi / WeDefense data folder: `wav.scp` (`uttid path`, relative to the folder or absolute, inside it) and
    `utt2lab` (`uttid label`); `utt2spk` too when present. An id in only one of the two files is a problem
    (--check), and only ids in both are trials.

    Raises:
        FileNotFoundError: a file missing. ValueError: a line with a missing column, an unknown label, a repeated id,
            a pipe or a path outside the root (each naming file and line).
    """
    root = Path(root).expanduser()
    scp_path, lab_path, spk_path = root / "wav.scp", root / "utt2lab", root / "utt2spk"
    for p in (scp_path, lab_path):
        if not p.is_file():
            raise FileNotFoundError(f"--data-root {root} has no {p.name}; a Kaldi folder needs wav.scp and utt2lab")
    scp, labels = _read_kaldi_map(scp_path, "wav.scp path"), _read_kaldi_map(lab_path, "utt2lab label")
    speakers = _read_kaldi_map(spk_path, "utt2spk speaker") if spk_path.is_file() else {}
    entries, problems, listed = [], [], []
    for utt, (rx, number) in scp.items():
        path = resolve_audio_path(root, rx.strip(), f"wav.scp line {number}")
        listed.append(path)
        if utt not in labels:
            problems.append(Problem(utt, path, f"no label: wav.scp line {number} names it, utt2lab does not"))
            continue
        key = normalise_label(labels[utt][0], f"utt2lab line {labels[utt][1]}")
        speaker = speakers.get(utt, ("-", 0))[0].strip()
        entries.append(ProtocolEntry(speaker, utt, "-" if key == "bonafide" else "spoof", key, path))
    for utt, (_, number) in labels.items():
        if utt not in scp:
            problems.append(Problem(utt, str(lab_path), f"no audio: utt2lab line {number} labels it, wav.scp does "
                                    "not name its file", missing=True))  # fmt: skip
    return _finish("kaldi", root, lab_path, entries, listed=listed, problems=problems)


def label_folders(root: Path) -> dict[str, Path]:
    """{folder name: "bonafide" | "spoof"} of the root's subfolders named by a label word (bonafide/, real/, fake/)."""
    out = {}
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.is_dir() and d.name.lower() in BONAFIDE_WORDS + SPOOF_WORDS:
            out[d.name] = normalise_label(d.name, str(d))
    return out


def read_folders(root: str | os.PathLike) -> Corpus:
    """Two folders of audio: `bonafide/` and `spoof/` (or `real/` and `fake/`, any label word). A file in a subfolder
    of a spoof folder takes the subfolder's name as its attack (spoof/hifigan/x.wav: attack hifigan)."""
    root = Path(root).expanduser()
    folders = label_folders(root)
    if not folders:
        raise FileNotFoundError(f"--data-root {root} has no label folders; expected bonafide/ and spoof/ (or real/ "
                                "and fake/) holding audio files")  # fmt: skip
    entries = []
    for name, key in folders.items():
        for path in sorted(index_audio(root / name).values()):
            rel = Path(path).relative_to(os.path.abspath(root / name)).parts
            system = "-" if key == "bonafide" else (rel[0] if len(rel) > 1 else "spoof")
            utt = utt_id_of_path(root, path)
            entries.append(ProtocolEntry("-", utt, system, key, path, (("folder", name),)))
    return _finish("folders", root, root, entries)


def find_csv(root: Path) -> Path:
    """The CSV/TSV key file: --data-root itself when it is one, else the only *.csv / *.tsv in the folder."""
    if root.is_file():
        return root
    found = sorted(p for p in [*root.glob("*.csv"), *root.glob("*.tsv")] if not p.name.startswith("ASVspoof5."))
    if len(found) != 1:
        raise FileNotFoundError(f"--data-root {root}: {'several' if found else 'no'} CSV/TSV files "
                                f"({', '.join(p.name for p in found) or 'none'}); point --data-root at the one to read")  # fmt: skip
    return found[0]


def read_csv(root: str | os.PathLike) -> Corpus:
    """A CSV (comma) or TSV (tab) file with a header naming a path column (path, file, filename, audio, wav, ...)
    and a label column (label, key, class, ...); other columns become metadata (attack/system and speaker fill
    those fields). Paths are relative to the file's folder, which is the data root.

    Raises:
        FileNotFoundError: no such file. ValueError: a header without a path or label column, a row with a missing
            column, an unknown label, a repeated path, a path outside the root (each naming file and line).
    """
    key_file = find_csv(Path(root).expanduser())
    folder = key_file.parent
    with open(key_file, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    delimiter = "\t" if "\t" in first or key_file.suffix.lower() == ".tsv" else ","
    rows = _read_table(key_file, delimiter, "CSV key file")
    header = [h.strip().lower() for h in rows[0][1]]
    path_col = next((header.index(c) for c in CSV_PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in CSV_LABEL_COLUMNS if c in header), None)
    if path_col is None or label_col is None:
        raise ValueError(f"{key_file.name} line {rows[0][0]}: header {delimiter.join(rows[0][1])!r} names no "
                         f"{'path' if path_col is None else 'label'} column; expected one of "
                         f"{', '.join(CSV_PATH_COLUMNS if path_col is None else CSV_LABEL_COLUMNS)}")  # fmt: skip
    attack_col = next((header.index(c) for c in ("attack", "system") if c in header), None)
    speaker_col = header.index("speaker") if "speaker" in header else None
    entries, seen = [], {}
    for number, fields in rows[1:]:
        where = f"{key_file.name} line {number}"
        path = resolve_audio_path(folder, fields[path_col].strip(), where)
        utt = utt_id_of_path(folder, path)
        _check_new_id(seen, utt, where, number)
        key = normalise_label(fields[label_col], where)
        system = "-" if key == "bonafide" else (fields[attack_col].strip() if attack_col is not None else "spoof")
        speaker = fields[speaker_col].strip() if speaker_col is not None else "-"
        meta = tuple((h, v.strip()) for i, (h, v) in enumerate(zip(header, fields)) if i not in (path_col, label_col))
        entries.append(ProtocolEntry(speaker or "-", utt, system or "spoof", key, path, meta))
    return _finish("csv", folder, key_file, entries)


def detect_corpus(root: str | os.PathLike) -> str:
    """Which corpus --data-root holds, from what is on disk (the names of `CORPORA`).

    Raises:
        FileNotFoundError: nothing recognised (listing what was looked for). ValueError: several formats at once
            (name one with --corpus).
    """
    base = Path(root).expanduser()
    if not base.exists():
        raise FileNotFoundError(f"--data-root {base} does not exist")
    if base.is_file():
        return "itw" if base.name == "meta.csv" else "csv"
    found = []
    try:
        find_la_root(base)
        found.append("la19")
    except FileNotFoundError:
        pass
    for track in ("LA", "DF"):
        try:
            find_la21_files(base, track)
            found.append(track.lower() + "21")
        except FileNotFoundError:
            pass
    if [*base.glob("ASVspoof5.*.tsv"), *base.glob("ASVspoof5_protocols/ASVspoof5.*.tsv")]:
        found.append("asv5")
    if (base / "wav.scp").is_file() and (base / "utt2lab").is_file():
        found.append("kaldi")
    if (base / "meta.csv").is_file() or (base / "release_in_the_wild" / "meta.csv").is_file():
        found.append("itw")
    if len(set(label_folders(base).values())) == 2:
        found.append("folders")
    if not found and len([*base.glob("*.csv"), *base.glob("*.tsv")]) == 1:
        found.append("csv")
    if not found:
        raise FileNotFoundError(
            f"--data-root {base}: no corpus recognised; expected ASVspoof 2019 LA (ASVspoof2019_LA_cm_protocols/), "
            "2021 LA/DF (keys/LA|DF/CM/trial_metadata.txt), In-the-Wild (meta.csv), ASVspoof 5 (ASVspoof5.*.tsv), "
            "Kaldi (wav.scp + utt2lab), bonafide/ + spoof/ folders, or one CSV/TSV with path and label columns"
        )
    if len(found) > 1:
        raise ValueError(f"--data-root {base} holds several corpora ({', '.join(found)}); choose one with --corpus")
    return found[0]


def read_corpus(root: str | os.PathLike, name: str | None = None, subset: str | None = None) -> Corpus:
    """The one entry point every script uses: read the corpus at `root` (detected, or named by --corpus).

    Args:
        root: --data-root (a folder; for csv / itw also the key file itself).
        name: one of CORPORA, or None to detect it.
        subset: the LA19 split (default eval), the LA21/DF21 subset (default eval), the ASVspoof 5 protocol (train,
            dev, eval or a path); refused for corpora without subsets.
    """
    if root is None:
        raise FileNotFoundError("no --data-root given: point it at a corpus folder (or $ASVSPOOF_ROOT)")
    if name is not None and name not in CORPORA:
        raise ValueError(f"--corpus {name!r}: expected one of {', '.join(CORPORA)}")
    name = name or detect_corpus(root)
    if subset is not None and name in ("itw", "kaldi", "folders", "csv"):
        raise ValueError(f"--subset {subset}: the {name} corpus has no subsets")
    path = Path(root).expanduser()
    if name in ("itw",) and path.is_file():
        path = path.parent
    if name == "la19":
        return read_la19(path, subset or "eval")
    if name in ("la21", "df21"):
        return read_la21(path, name[:2].upper(), subset or "eval")
    readers = {"itw": read_itw, "kaldi": read_kaldi, "folders": read_folders, "csv": read_csv}
    if name == "asv5":
        return read_asv5(path, subset)
    return readers[name](path)


def find_unkeyed_audio(corpus: Corpus) -> list[Problem]:
    """Audio files in the folders the key file points into that no key line names (a user's own set is meant to be
    keyed whole; for the official sets every file in their folders is keyed, in some subset)."""
    folders = sorted({os.path.dirname(e.path) for e in corpus.entries if e.path})
    problems = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for d in os.scandir(folder):
            if d.name.lower().endswith(AUDIO_SUFFIXES) and os.path.join(folder, d.name) not in corpus.listed:
                problems.append(Problem(d.name.rsplit(".", 1)[0], os.path.join(folder, d.name),
                                        f"no key: {corpus.key_file.name} does not list it"))  # fmt: skip
    return problems


def add_corpus_args(parser) -> None:
    """--corpus and --subset, for the scripts that read a labelled set (data.py --check, evaluate.py, metrics.py);
    not in `cli.add_common_args`, because train.py and explain.py read only ASVspoof 2019 LA."""
    g = parser.add_argument_group("corpus")
    g.add_argument("--corpus", choices=CORPORA,
                   help="the corpus at --data-root (default: detected from what is on disk)")  # fmt: skip
    g.add_argument("--subset", help="LA21/DF21: eval (default), progress, hidden_track or all; ASVspoof 5: the "
                   "protocol (train, dev, eval or its path); LA19 takes --split")  # fmt: skip


# ----------------------------------------------------------------------------- your own files as an In-the-Wild folder


@dataclass(frozen=True)
class LabelledFile:
    """One file of a set to write in the In-the-Wild format (`write_itw_corpus`)."""

    path: str  # the audio, anywhere
    speaker: str
    key: str  # any label word `normalise_label` takes
    source: str  # where it comes from (a metadata column for --by source)


def write_itw_corpus(out: str | os.PathLike, files: Sequence[LabelledFile], link: bool = True) -> Path:
    """Write a labelled set in the In-the-Wild format: `out/meta.csv` (`file,speaker,label,source`, labels
    `bona-fide` / `spoof` as In-the-Wild spells them) and the audio as `out/<n><suffix>`, symbolic links to the
    originals (copies with `link=False` or where links fail). Reading it back is `read_itw(out)`.

    Returns:
        The meta.csv path (written atomically).
    """
    import csv
    import io
    import shutil

    from cli import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "speaker", "label", "source"])
    for n, f in enumerate(files):
        name = f"{n}{Path(f.path).suffix.lower()}"
        target = out / name
        if target.is_symlink() or target.exists():
            target.unlink()
        try:
            if not link:
                raise OSError("copy asked for")
            target.symlink_to(os.path.abspath(f.path))
        except OSError:
            shutil.copyfile(f.path, target)
        key = normalise_label(f.key, f"file {f.path}")
        writer.writerow([name, f.speaker, "bona-fide" if key == "bonafide" else "spoof", f.source])
    with atomic_write(out / "meta.csv") as fh:
        fh.write(buf.getvalue())
    return out / "meta.csv"


def shared_cross_corpus(shared: str | os.PathLike, enrollment: int = 59) -> list[LabelledFile]:
    """The project's real cross-corpus set, from ../shared/data (its README says what may be used how; heldout/ is
    never read): bona fide = LibriVox (5), CMU ARCTIC (10), the Asterisk IVR prompts (40, 8 kHz telephone band), the
    first `enrollment` ASVspoof 2019 LA enrollment segments (dev: 59) and the real half of the NII vocoded pair;
    spoof = the 12 NII hn-sinc-NSF-vocoded CMU ARCTIC utterances and the vocoded half of the NII pair.

    Raises:
        FileNotFoundError: a source folder missing under `shared`.
    """
    root = Path(shared)
    parts = [
        ("speech/librivox_pocketsphinx", "*.wav", "bonafide", "librivox", lambda p: "librivox_austen"),
        ("speech/cmu_arctic", "*.wav", "bonafide", "cmu_arctic", lambda p: p.name.split("_")[0]),
        ("speech/asterisk_allison_8k", "*.wav", "bonafide", "asterisk_ivr", lambda p: "allison"),
        ("asvspoof2019_la_enrollment/dev", "*.flac", "bonafide", "la19_enrollment", lambda p: p.name[:7]),
        ("vocoded_pairs/nii_wave_replacement/real", "*.flac", "bonafide", "nii_pair_real", lambda p: p.stem[:5]),
        ("vocoded_pairs/nii_nsf_arctic_outputs/hn-sinc-nsf-10", "*.wav", "spoof", "nii_nsf_arctic",
         lambda p: p.name.split("_")[0]),
        ("vocoded_pairs/nii_wave_replacement/voc", "*.flac", "spoof", "nii_pair_vocoded", lambda p: p.stem[:5]),
    ]  # fmt: skip
    files = []
    for folder, pattern, key, source, speaker in parts:
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"{root / folder} is missing: expected ../shared/data's {source} audio")
        found = sorted((root / folder).glob(pattern))
        if source == "la19_enrollment":
            found = found[:enrollment]
        files += [LabelledFile(str(p), speaker(p), key, source) for p in found]
    return files
