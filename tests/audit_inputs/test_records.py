"""load_records: every format, every bad input as a one-line UserError naming the field; deduplicate."""
import json
import os

import numpy as np
import pytest

from ftaudit.data.records import Records, check_label_range, deduplicate, load_records
from ftaudit.errors import UserError

F = "--members"


def write(path, text, mode="w"):
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def fails(spec, match, **kw):
    with pytest.raises(UserError, match=match) as err:
        load_records(spec, F, **kw)
    assert err.value.field == F and "\n" not in str(err.value) and err.value.fix
    return err.value


# --- formats -----------------------------------------------------------------------------------

def test_txt_one_record_per_line_blank_lines_skipped(tmp_path):
    r = load_records(write(tmp_path / "m.txt", "first record\n\n  \nsecond, with ünïcode\r\nthird\n"), F)
    assert r.texts == ["first record", "second, with ünïcode", "third"]
    assert r.labels is None and r.images is None and len(r) == 3 and r.source == str(tmp_path / "m.txt")


def test_jsonl_with_and_without_labels(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0, "other": [1]}, {"text": "c", "label": 2.0}]
    path = write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    r = load_records(path, F, need_labels=True)
    assert r.texts == ["a", "b", "c"] and r.labels.dtype == np.int64 and r.labels.tolist() == [1, 0, 2]
    unlabelled = write(tmp_path / "u.jsonl", '{"text": "x"}\n{"text": "y"}\n')
    assert load_records(unlabelled, F).labels is None


def test_json_list_and_custom_keys(tmp_path):
    path = write(tmp_path / "m.json", json.dumps([{"body": "p", "y": "3"}, {"body": "q", "y": 4}]))
    r = load_records(path, F, text_key="body", label_key="y", need_labels=True)
    assert r.texts == ["p", "q"] and r.labels.tolist() == [3, 4]


def test_csv_with_labels_quotes_and_bom(tmp_path):
    path = write(tmp_path / "m.csv", '\ufefftext,label\n"hello, world",1\n"two\nlines",0\nplain, 2 \n')
    r = load_records(path, F, need_labels=True)
    assert r.texts == ["hello, world", "two\nlines", "plain"] and r.labels.tolist() == [1, 0, 2]


def test_npz_images_with_labels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4)).astype(np.uint8)
    np.savez(tmp_path / "m.npz", x=x, y=np.arange(5) % 2)
    r = load_records(tmp_path / "m.npz", F, need_labels=True)
    assert r.texts is None and r.images.dtype == np.float32 and r.images.shape == (5, 3, 4, 4)
    np.testing.assert_allclose(r.images, x / 255.0, rtol=1e-6)
    assert r.labels.tolist() == [0, 1, 0, 1, 0] and len(r) == 5
    np.savez(tmp_path / "gray.npz", x=np.zeros((2, 4, 4), np.float64), y=np.array([1, 0]))
    assert load_records(tmp_path / "gray.npz", F).images.shape == (2, 1, 4, 4)


def test_in_memory_lists_and_records():
    assert load_records(["a", "b"], F).texts == ["a", "b"]
    assert load_records([{"text": "a", "label": 1}], F, need_labels=True).labels.tolist() == [1]
    r = Records(texts=["a"], labels=None, images=None, source="in-memory")
    assert load_records(r, F) is r
    assert load_records(("a",), F).source == "in-memory"


def test_datasets_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(tmp_path / "ds"))
    r = load_records(tmp_path / "ds", F, need_labels=True)
    assert r.texts == ["a", "b"] and r.labels.tolist() == [0, 1]


def test_datasets_directory_without_the_package(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_datasets(name, *a, **kw):
        if name == "datasets":
            raise ImportError("no datasets")
        return real(name, *a, **kw)

    (tmp_path / "ds").mkdir()
    write(tmp_path / "ds" / "dataset_info.json", "{}")
    monkeypatch.setattr(builtins, "__import__", no_datasets)
    assert "pip install datasets" in fails(tmp_path / "ds", "datasets package is not installed").fix


def test_subset_keeps_order_and_source():
    r = Records(texts=["a", "b", "c"], labels=np.array([0, 1, 2]), images=None, source="s")
    s = r.subset(np.array([2, 0]))
    assert s.texts == ["c", "a"] and s.labels.tolist() == [2, 0] and s.source == "s"
    img = Records(texts=None, labels=None, images=np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2), source="i")
    assert img.subset([1]).images.shape == (1, 1, 2, 2) and len(img.subset([])) == 0


# --- bad input -----------------------------------------------------------------------------------

def test_missing_file_and_directory_that_is_not_a_dataset(tmp_path):
    fails(tmp_path / "nope.txt", "does not exist")
    (tmp_path / "dir").mkdir()
    fails(tmp_path / "dir", "not a dataset saved with save_to_disk")


def test_unknown_format_and_wrong_object(tmp_path):
    fails(write(tmp_path / "m.parquet", "x"), "unknown format")
    fails(42, "cannot read records from a int")


@pytest.mark.parametrize("name,content", [("e.txt", ""), ("b.txt", "\n  \n\n"), ("e.jsonl", "\n"),
                                          ("e.csv", "text,label\n"), ("e.json", "[]")])
def test_empty_files(tmp_path, name, content):
    fails(write(tmp_path / name, content), "no records")


def test_empty_in_memory_list():
    fails([], "no records in in-memory")


def test_undecodable_and_unreadable_files(tmp_path):
    fails(write(tmp_path / "latin.txt", "caf\xe9\n".encode("latin-1"), "wb"), "not UTF-8")
    fails(write(tmp_path / "bad.jsonl", '{"text": "a"}\n{"text": \n'), "line 2 .* not valid JSON")
    fails(write(tmp_path / "bad.json", '{"text": "a"}'), "not a list of records")
    fails(write(tmp_path / "bad.npz", b"not a zip", "wb"), "not a numpy .npz archive")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    fails(tmp_path / "obj.npz", "Python objects \\(pickled\\)")
    locked = write(tmp_path / "locked.txt", "a\n")
    locked.chmod(0)
    try:
        if not os.access(locked, os.R_OK):  # root reads anything
            fails(locked, "cannot read")
    finally:
        locked.chmod(0o644)


def test_missing_text_column(tmp_path):
    e = fails(write(tmp_path / "m.csv", "body,label\nx,1\n"), "no 'text' column")
    assert "body" in e.problem
    fails(write(tmp_path / "m.jsonl", '{"text": "a"}\n{"body": "b"}\n'), "record 1 .* no 'text' field")
    fails([{"body": "a"}], "no 'text' field")
    fails(["a", {"text": "b"}], "not all strings or all objects")
    fails([{"text": 3}], "int for its text")
    fails([{"text": " "}], "empty text")


def test_classification_without_labels(tmp_path):
    e = fails(write(tmp_path / "m.txt", "a\nb\n"), "no labels, and classification needs them", need_labels=True)
    assert "'label'" in e.fix
    fails(write(tmp_path / "m.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n'), "record 1 .* no 'label'",
          need_labels=True)
    fails(["a"], "no labels", need_labels=True)
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1, 2, 2), np.float32))
    fails(tmp_path / "x.npz", "no labels", need_labels=True)
    # partly labelled records are fine when labels are not needed: the labels are dropped
    assert load_records([{"text": "a", "label": 1}, {"text": "b"}], F).labels is None


@pytest.mark.parametrize("label", ["cat", 1.5, True, [1], None])
def test_non_integer_labels(label):
    if label is None:
        fails([{"text": "a", "label": None}], "no labels", need_labels=True)
    else:
        fails([{"text": "a", "label": label}], "not an integer class", need_labels=True)


def test_bad_npz_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 1, 2, 2)))
    fails(tmp_path / "a.npz", "no array 'x'")
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 2)), y=np.zeros(2, int))
    fails(tmp_path / "b.npz", "not numeric images")
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 1, 2, 2)), y=np.zeros(3, int))
    fails(tmp_path / "c.npz", "2 images but 3 labels")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 2, 2)), y=np.array([0.5, 1.0]))
    fails(tmp_path / "d.npz", "not an integer class")


def test_labels_outside_the_models_range():
    r = load_records([{"text": "a", "label": 0}, {"text": "b", "label": 3}, {"text": "c", "label": -1}], F)
    with pytest.raises(UserError, match="record 1 .* label 3, outside the model's 3 classes \\(2 such") as err:
        check_label_range(r, 3, F)
    assert err.value.field == F and "0 … 2" in err.value.fix
    check_label_range(r.subset([0, 1]), 4, F)
    check_label_range(load_records(["a"], F), 2, F)  # no labels: nothing to check


# --- dedup -------------------------------------------------------------------------------------

def test_deduplicate_counts_and_keeps_first_copies():
    m = load_records([{"text": t, "label": i} for i, t in enumerate(["a", "b", "a", "c", "d", "d", "d"])], F)
    n = load_records([{"text": t, "label": 0} for t in ["x", "c", "y", "x", "d", "z"]], "--nonmembers")
    m2, n2, counts = deduplicate(m, n)
    assert counts == {"member_duplicates": 3, "nonmember_duplicates": 1, "overlap": 2}
    assert m2.texts == ["a", "b"] and m2.labels.tolist() == [0, 1]
    assert n2.texts == ["x", "y", "z"] and n2.source == n.source


def test_deduplicate_without_duplicates_is_identity():
    m, n = load_records(["a", "b"], F), load_records(["c"], F)
    m2, n2, counts = deduplicate(m, n)
    assert m2.texts == ["a", "b"] and n2.texts == ["c"] and counts == dict.fromkeys(counts, 0)


def test_deduplicate_images_by_pixels():
    x = np.zeros((4, 1, 2, 2), np.float32)
    x[1] += 1
    x[3] += 2
    m = Records(texts=None, labels=np.array([0, 1, 0, 1]), images=x, source="m")  # 0 and 2 equal
    n = Records(texts=None, labels=np.array([0]), images=x[3:].copy(), source="n")  # equal to member 3
    m2, n2, counts = deduplicate(m, n)
    assert counts == {"member_duplicates": 1, "nonmember_duplicates": 0, "overlap": 1}
    assert len(m2) == 2 and len(n2) == 0 and m2.labels.tolist() == [0, 1]
