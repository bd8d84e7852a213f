"""Each reader on a copy of its dataset laid out as published (see ``published.py``), through ``prepare``:
the published splits come out exactly, every bad input is listed with its reason, and the reader
says where it found the data, whether ``--path`` names the dataset's folder or the one above it."""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from shortcutlm.datasets.prepare import prepare
from shortcutlm.datasets.sources import read_source
from shortcutlm.documents import Document, Found, Rejected

from .published import make_librispeech, make_maestro, make_text8, make_wikitext, write_flac

ACOUSTIC = {"domain": "acoustic", "weights": "mel_kmeans", "bandwidth": 1.5, "layout": "delay",
            "kmeans_iters": 2, "kmeans_max_frames": 2000}
TEXT = {"domain": "text", "vocab_size": 400}


def items(spec):
    found: list[Found] = []
    got = list(read_source(spec, found))
    assert len(found) == 1 and all(isinstance(i, (Document, Rejected)) for i in got)
    return found, [i for i in got if isinstance(i, Document)], [i for i in got if isinstance(i, Rejected)]


def written(manifest):
    """Document ids per split, as the shards hold them."""
    out = defaultdict(list)
    for record in manifest["shards"]:
        out[record["split"]] += record["doc_ids"]
    return dict(out)


# ------------------------------------------------------------------------------ LibriSpeech

LIBRI = {"train-clean-100": [("103", "1240", 3), ("1034", "121119", 2)],
         "dev-clean": [("84", "121123", 2)],
         "test-clean": [("1089", "134686", 2)]}


def test_librispeech_found_from_each_level(tmp_path):
    root = make_librispeech(tmp_path, LIBRI)
    for given in (tmp_path, root, root / "dev-clean"):
        found, docs, _ = items({"name": "librispeech", "path": str(given)})
        assert found[0].where == root and found[0].source == "librispeech"
    found, docs, rejected = items({"name": "librispeech", "path": str(tmp_path)})
    assert "train-clean-100 (train), dev-clean (valid), test-clean (test)" in found[0].what
    assert Counter(d.split for d in docs) == {"train": 5, "valid": 2, "test": 2}
    assert {r.input.rsplit("/", 1)[1] for r in rejected} == {"103-1240-0003.flac", "1034-121119-0002.flac",
                                                             "84-121123-0002.flac", "1089-134686-0002.flac"}
    with pytest.raises(FileNotFoundError, match=r"train-clean-360 not found .* "
                                                r"\(it holds train-clean-100, dev-clean, test-clean\)"):
        list(read_source({"name": "librispeech", "path": str(tmp_path), "subsets": ["train-clean-360"]}))
    with pytest.raises(FileNotFoundError, match="no train-\\*/dev-\\*/test-\\* subset folders"):
        list(read_source({"name": "librispeech", "path": str(root / "dev-clean" / "84")}))


def test_librispeech_without_a_train_subset_says_what_it_found(tmp_path):
    from shortcutlm.datasets.prepare import PrepareError

    make_librispeech(tmp_path, {"dev-clean": [("84", "121123", 2)]}, seconds=0.2)
    with pytest.raises(PrepareError, match=r"needs training but the source has no train documents \(it gave 2 valid\)"):
        prepare({"name": "librispeech", "path": str(tmp_path)}, ACOUSTIC, tmp_path / "out", workers=0, progress=False)


def test_librispeech_limit_spreads_over_speakers(tmp_path):
    make_librispeech(tmp_path, {"train-clean-100": [("19", "198", 4), ("26", "495", 4)]}, missing_flac=False,
                     seconds=0.1)
    found, docs, _ = items({"name": "librispeech", "path": str(tmp_path), "limit": 2})
    assert [d.doc_id for d in docs] == ["19-198-0000", "26-495-0000"] and "at most 2" in found[0].what


def test_librispeech_through_prepare(tmp_path):
    make_librispeech(tmp_path, LIBRI, corrupt="1034-121119-0001")
    manifest = prepare({"name": "librispeech", "path": str(tmp_path)}, ACOUSTIC, tmp_path / "out", workers=0,
                       progress=False)
    assert written(manifest) == {"train": ["103-1240-0000", "103-1240-0001", "103-1240-0002", "1034-121119-0000"],
                                 "valid": ["84-121123-0000", "84-121123-0001"],
                                 "test": ["1089-134686-0000", "1089-134686-0001"]}
    rejected = {r["doc_id"]: r for r in manifest["rejected"]}
    assert set(rejected) == {"103-1240-0003", "1034-121119-0002", "84-121123-0002", "1089-134686-0002",
                             "1034-121119-0001"}
    assert "flac is missing" in rejected["103-1240-0003"]["reason"]
    assert rejected["1034-121119-0001"]["input"].endswith("1034-121119-0001.flac")
    assert "flac is missing" not in rejected["1034-121119-0001"]["reason"]
    assert (manifest["inputs"]["total"] == 13
            and manifest["found"][0].startswith(f"librispeech in {tmp_path / 'LibriSpeech'}: subsets"))
    assert manifest["splits"]["valid"]["seconds"] == pytest.approx(2.0, abs=0.05)


# ------------------------------------------------------------------------------ WikiText-103

WIKI = {"train": 6, "valid": 2, "test": 2}


def test_wikitext_raw_and_tokens(tmp_path):
    make_wikitext(tmp_path, WIKI)
    found, docs, _ = items({"name": "wikitext103", "path": str(tmp_path)})
    assert found[0].where == tmp_path / "wikitext-103-raw" and "the raw variant" in found[0].what
    assert "tokens variant is also in" in found[0].what and "variant=tokens" in found[0].what
    assert Counter(d.split for d in docs) == WIKI
    assert all("<unk>" not in d.text and " @-@ " not in d.text for d in docs)
    assert "".join(d.text for d in docs if d.split == "test") == \
        (tmp_path / "wikitext-103-raw" / "wiki.test.raw").read_text()
    found, docs, _ = items({"name": "wikitext103", "path": str(tmp_path), "variant": "tokens"})
    assert found[0].where == tmp_path / "wikitext-103" and "tokens variant" in found[0].what
    assert any(" @-@ " in d.text for d in docs) and Counter(d.split for d in docs) == WIKI
    only_tokens = tmp_path / "wikitext-103"
    assert items({"name": "wikitext103", "path": str(only_tokens / "wiki.valid.tokens")})[0][0].where == only_tokens
    renamed = tmp_path / "elsewhere"
    renamed.mkdir()
    only_tokens = (tmp_path / "wikitext-103").rename(renamed / "wt103")  # unpacked under another name
    assert items({"name": "wikitext103", "path": str(renamed), "variant": "tokens"})[0][0].where == only_tokens
    with pytest.raises(FileNotFoundError, match="no wiki.{train,valid,test}.raw"):
        list(read_source({"name": "wikitext103", "path": str(only_tokens), "variant": "raw"}))


def test_wikitext_raw_through_prepare(tmp_path):
    make_wikitext(tmp_path, WIKI, variants=("raw",))
    manifest = prepare({"name": "wikitext103", "path": str(tmp_path)}, TEXT, tmp_path / "out", workers=0,
                       progress=False)
    assert {split: len(ids) for split, ids in written(manifest).items()} == WIKI
    assert written(manifest)["test"] == ["wikitext103-test-000000", "wikitext103-test-000001"]
    assert manifest["found"] == [f"wikitext103 in {tmp_path / 'wikitext-103-raw'}: the raw variant, wiki.train.raw, "
                                 "wiki.valid.raw, wiki.test.raw"]


def test_wikitext_file_that_is_not_utf8_is_listed(tmp_path):
    make_wikitext(tmp_path, WIKI, variants=("raw",))
    bad = tmp_path / "wikitext-103-raw" / "wiki.valid.raw"
    bad.write_bytes(b" \n = Title = \n \xff\xfe broken \n")
    _, docs, rejected = items({"name": "wikitext103", "path": str(tmp_path)})
    assert Counter(d.split for d in docs) == {"train": 6, "test": 2}
    assert [(r.input, r.split) for r in rejected] == [(str(bad), "valid")] and "not UTF-8" in rejected[0].reason
    manifest = prepare({"name": "wikitext103", "path": str(tmp_path)}, TEXT, tmp_path / "out", workers=0,
                       progress=False)
    assert [(r["input"], r["split"]) for r in manifest["rejected"]] == [(str(bad), "valid")]
    assert manifest["warnings"] == ["the valid split is empty: the source gave no valid documents"]


# ------------------------------------------------------------------------------ MAESTRO v3

MAESTRO_ROWS = [("2004", "train", "MIDI-Unprocessed_SMF_02_R1_2004_01-05_ORIG_MID--AUDIO_02_R1_2004_05_Track05_wav"),
                ("2006", "train", "MIDI-Unprocessed_01_R1_2006_01-09_ORIG_MID--AUDIO_01_R1_2006_01_Track01_wav"),
                ("2008", "train", "MIDI-Unprocessed_03_R2_2008_01-03_ORIG_MID--AUDIO_03_R2_2008_wav--1"),
                ("2009", "train", "MIDI-Unprocessed_07_R1_2009_01-04_ORIG_MID--AUDIO_07_R1_2009_07_R1_2009_01_WAV"),
                ("2011", "train", "MIDI-Unprocessed_04_R1_2011_MID--AUDIO_R1-D2_02_Track02_wav"),
                ("2013", "validation", "ORIG-MIDI_01_7_6_13_Group__MID--AUDIO_01_R1_2013_wav--2"),
                ("2014", "test", "MIDI-UNPROCESSED_01-03_R1_2014_MID--AUDIO_01_R1_2014_wav--1"),
                ("2015", "train", "MIDI-Unprocessed_R1_D1-1-8_mid--AUDIO-from_mp3_01_R1_2015_wav--2"),
                ("2017", "validation", "MIDI-Unprocessed_040_PIANO040_MID--AUDIO-split_07-06-17_Piano-e_3-02_wav--3"),
                ("2018", "test", "MIDI-Unprocessed_Chamber1_MID--AUDIO_07_R3_2018_wav--1")]


def test_maestro_found_from_the_zip_folder(tmp_path):
    root = make_maestro(tmp_path, MAESTRO_ROWS)
    for given in (tmp_path, root, root / "maestro-v3.0.0.csv"):
        found, docs, rejected = items({"name": "maestro", "path": str(given)})
        assert found[0].where == root and "maestro-v3.0.0.csv (10 rows)" in found[0].what
        assert Counter(d.split for d in docs) == {"train": 6, "valid": 2, "test": 2} and not rejected
    with pytest.raises(FileNotFoundError, match="no maestro-v3.0.0.csv in .* or in a folder right under it"):
        list(read_source({"name": "maestro", "path": str(root / "2004")}))


def test_maestro_through_prepare(tmp_path):
    stems = [stem for _, _, stem in MAESTRO_ROWS]
    make_maestro(tmp_path, MAESTRO_ROWS, corrupt={stems[1]}, missing={stems[6]})
    manifest = prepare({"name": "maestro", "path": str(tmp_path)}, {"domain": "midi"}, tmp_path / "out", workers=0,
                       progress=False)
    ids = {stem: f"{year}_{stem}" for year, _, stem in MAESTRO_ROWS}
    assert written(manifest) == {"train": [ids[s] for s in (stems[0], stems[2], stems[3], stems[4], stems[7])],
                                 "valid": [ids[stems[5]], ids[stems[8]]], "test": [ids[stems[9]]]}
    rejected = {r["doc_id"]: r for r in manifest["rejected"]}
    assert set(rejected) == {ids[stems[1]], ids[stems[6]]}
    assert "missing" in rejected[ids[stems[6]]]["reason"] and rejected[ids[stems[6]]]["split"] == "test"
    assert rejected[ids[stems[1]]]["split"] == "train" and "missing" not in rejected[ids[stems[1]]]["reason"]
    assert manifest["found"][0].startswith(f"maestro in {tmp_path / 'maestro-v3.0.0'}: maestro-v3.0.0.csv (10 rows)")


def test_maestro_csv_cannot_point_outside_its_folder(tmp_path):
    root = make_maestro(tmp_path, MAESTRO_ROWS[:2])
    (tmp_path / "secret.midi").write_bytes(b"MThd")
    text = (root / "maestro-v3.0.0.csv").read_text().replace(f"2004/{MAESTRO_ROWS[0][2]}.midi", "../secret.midi")
    (root / "maestro-v3.0.0.csv").write_text(text)
    _, docs, rejected = items({"name": "maestro", "path": str(root)})
    assert len(docs) == 1 and "not a relative path inside" in rejected[0].reason


# ------------------------------------------------------------------------------ text8

def test_text8_through_prepare(tmp_path):
    make_text8(tmp_path / "data", 60_020)
    manifest = prepare({"name": "text8", "path": str(tmp_path / "data"), "chunk_chars": 20_000}, TEXT,
                       tmp_path / "out", workers=0, progress=False)
    assert {s: e["documents"] for s, e in manifest["splits"].items()} == {"train": 3, "valid": 1, "test": 1}
    assert manifest["found"][0].startswith(f"text8 in {tmp_path / 'data'}: text8, 60,020 characters (not the "
                                                                 "published 100,000,000")
    text = (tmp_path / "data" / "text8").read_text()
    _, docs, _ = items({"name": "text8", "path": str(tmp_path / "data"), "chunk_chars": 20_000})
    for d in docs:  # only a split boundary may fall inside a word, and then the document says so
        inside = d.meta["start"] > 0 and text[d.meta["start"] - 1] != " " and text[d.meta["start"]] != " "
        assert d.meta.get("begins_mid_word", False) == inside
        assert not inside or d.meta["start"] in (54_018, 57_019)
    assert [d.meta["start"] for d in docs if d.meta.get("begins_mid_word")] == [54_018, 57_019]
    assert items({"name": "text8", "path": str(tmp_path)})[0][0].where == tmp_path / "data"  # one level down
    with pytest.raises(FileNotFoundError, match="no file named text8"):
        list(read_source({"name": "text8", "path": str(tmp_path / "out")}))


# ------------------------------------------------------------------------------ any folder

def test_folder_honours_published_split_names(tmp_path):
    make_wikitext(tmp_path, WIKI, variants=("raw",))
    folder = tmp_path / "wikitext-103-raw"
    found, docs, rejected = items({"name": "folder", "path": str(folder), "extensions": ".raw"})
    assert {d.meta["relative_path"]: d.split for d in docs} == {
        "wiki.train.raw": "train", "wiki.valid.raw": "valid", "wiki.test.raw": "test"}
    assert not rejected and "in the splits their names carry (train 1, valid 1, test 1)" in found[0].what
    manifest = prepare({"name": "folder", "path": str(folder), "extensions": ".raw"}, TEXT, tmp_path / "out",
                       workers=0, progress=False)
    assert written(manifest) == {"train": ["wiki_train_raw"], "valid": ["wiki_valid_raw"], "test": ["wiki_test_raw"]}


def test_folder_refuses_to_mix_named_and_unnamed_files(tmp_path):
    make_wikitext(tmp_path, WIKI, variants=("raw",))
    folder = tmp_path / "wikitext-103-raw"
    (folder / "notes.raw").write_text("a file that names no split\n")
    with pytest.raises(ValueError, match="name a split .* but 1 do not \\(e.g. notes.raw\\).*splits=hash"):
        list(read_source({"name": "folder", "path": str(folder), "extensions": ".raw"}))
    _, docs, _ = items({"name": "folder", "path": str(folder), "extensions": ".raw", "splits": "hash"})
    assert len(docs) >= 4  # hash splits, names ignored, as asked
    _, docs, rejected = items({"name": "folder", "path": str(folder), "extensions": ".raw", "splits": "names"})
    assert len(docs) == 3 and [r.doc_id for r in rejected] == ["notes_raw"] and "names no split" in rejected[0].reason
    manifest = prepare({"name": "folder", "path": str(folder), "extensions": ".raw", "splits": "names"}, TEXT,
                       tmp_path / "out", workers=0, progress=False)
    assert written(manifest) == {"train": ["wiki_train_raw"], "valid": ["wiki_valid_raw"], "test": ["wiki_test_raw"]}
    assert [(r["doc_id"], r["input"]) for r in manifest["rejected"]] == [("notes_raw", str(folder / "notes.raw"))]


def test_folder_split_folders_of_audio(tmp_path):
    for split, names in {"train": ["a", "b", "c"], "dev": ["d"], "validation": ["e"], "test": ["f"]}.items():
        for i, name in enumerate(names):
            write_flac(tmp_path / split / f"{name}.flac", 0.2, seed=i)
    write_flac(tmp_path / "train" / "test_take.flac", 0.2, seed=9)  # names two splits: never guessed
    found, docs, rejected = items({"name": "folder", "path": str(tmp_path)})
    assert {d.meta["relative_path"]: d.split for d in docs} == {
        "train/a.flac": "train", "train/b.flac": "train", "train/c.flac": "train", "dev/d.flac": "valid",
        "validation/e.flac": "valid", "test/f.flac": "test"}
    assert [r.doc_id for r in rejected] == ["train__test_take_flac"] and "two splits" in rejected[0].reason
    (tmp_path / "test" / "broken.flac").write_bytes(b"fLaC not really")
    manifest = prepare({"name": "folder", "path": str(tmp_path)}, ACOUSTIC, tmp_path.parent / f"{tmp_path.name}-out",
                       workers=0, progress=False)
    assert written(manifest) == {"train": ["train__a_flac", "train__b_flac", "train__c_flac"],
                                 "valid": ["dev__d_flac", "validation__e_flac"], "test": ["test__f_flac"]}
    assert sorted(r["doc_id"] for r in manifest["rejected"]) == ["test__broken_flac", "train__test_take_flac"]


def test_folder_never_hashes_files_whose_names_conflict(tmp_path):
    for name in ("train/test_notes.txt", "dev/train_log.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("words of a file\n")
    _, docs, rejected = items({"name": "folder", "path": str(tmp_path)})
    assert docs == [] and sorted(r.doc_id for r in rejected) == ["dev__train_log_txt", "train__test_notes_txt"]
    assert all("names two splits" in r.reason for r in rejected)
