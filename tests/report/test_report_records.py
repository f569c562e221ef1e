"""records.csv: one writer for every run directory (the pipeline's pooled rows and the audit's records)."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from ftaudit.report.records import RECORDS_NAME, pooled_records, ranks, records_table
from ftaudit.studies.audit.outputs import records_csv


def _rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_ranks_are_per_target_highest_first_ties_share_nan_last():
    scores = np.array([0.1, 0.9, 0.9, np.nan, 5.0, -1.0])
    target = np.array([0, 0, 0, 0, 1, 1])
    assert ranks(scores, target).tolist() == [3, 1, 1, 4, 1, 2]
    assert ranks(scores).tolist() == [4, 2, 2, 6, 1, 5]


def test_pooled_records_one_row_per_example_and_target():
    example = np.tile(np.arange(3), 2)
    arrays = {"labels": np.array([1, 0, 1, 0, 1, 0], bool), "example": example, "target": np.repeat([0, 1], 3),
              "audit_y": np.array([7, 8, 9]), "scores-loss": np.array([3.0, 2.0, 1.0, 1.0, 2.0, 3.0]),
              "scores-lira": np.arange(6.0), "roc-loss": np.zeros((2, 4))}
    rows = _rows(pooled_records(arrays))
    assert list(rows[0]) == ["example", "target", "member", "label", "loss", "loss_rank", "lira", "lira_rank"]
    assert [r["example"] for r in rows] == ["0", "1", "2"] * 2 and [r["target"] for r in rows] == ["0"] * 3 + ["1"] * 3
    assert [r["member"] for r in rows] == ["1", "0", "1", "0", "1", "0"]
    assert [r["label"] for r in rows] == ["7", "8", "9"] * 2  # the example's class
    assert [r["loss_rank"] for r in rows] == ["1", "2", "3", "3", "2", "1"]  # within each target model
    assert float(rows[1]["loss"]) == 2.0


def test_pooled_records_drop_columns_the_run_does_not_have():
    arrays = {"labels": np.array([True, False]), "example": np.array([0, 1]), "target": np.zeros(2, np.int64),
              "scores-loss": np.array([0.5, 0.25])}
    assert list(_rows(pooled_records(arrays))[0]) == ["example", "member", "loss", "loss_rank"]  # one target, no class


def test_columns_must_have_one_value_per_row():
    with pytest.raises(ValueError, match="'loss' has 2 values, expected 3"):
        records_table({"example": [0, 1, 2]}, {"loss": np.zeros(2)})


def test_the_audit_writes_through_the_same_writer_with_its_own_columns():
    scores = {"loss": np.array([0.3, 0.1, 0.2])}
    data = records_csv(scores, np.array([True, False, True]), np.array([4, 0, 1]), ["a", "b", "c"],
                       labels=np.array([1, 0, 1]), texts=["x, with a comma", "y", "z"])
    rows = _rows(data)
    assert list(rows[0]) == ["index", "set", "record", "id", "member", "label", "loss", "loss_rank", "text"]
    assert [r["set"] for r in rows] == ["member", "nonmember", "member"]
    assert rows[0]["text"] == "x, with a comma" and rows[0]["loss_rank"] == "1"
    assert data.split(b"\n")[1].split(b",")[6:8] == records_table({}, scores).split(b"\n")[1].split(b",")  # same cells


def test_every_run_directory_has_records_csv(study_runs):
    for name, run in study_runs.items():
        arrays = run.path / "arrays"
        labels = np.load(arrays / "labels.npy")
        rows = _rows((run.path / RECORDS_NAME).read_bytes())
        assert len(rows) == labels.size, name
        assert [r["member"] for r in rows] == [str(int(v)) for v in labels]
        for attack in run.results["attacks"]:
            stored = np.load(arrays / f"scores-{attack['name']}.npy")
            assert np.allclose([float(r[attack["name"]]) for r in rows], stored, rtol=1e-9)
            assert min(int(r[f"{attack['name']}_rank"]) for r in rows) == 1
    assert "label" in _rows((study_runs["finetune-mia"].path / RECORDS_NAME).read_bytes())[0]  # digits have a class
    assert "label" not in _rows((study_runs["lm-mia"].path / RECORDS_NAME).read_bytes())[0]  # text blocks do not


def test_runs_store_exposed_records_per_attack_resolution_and_the_band(study_runs):
    for run in study_runs.values():
        results = json.loads((run.path / "results.json").read_text())
        names = [a["name"] for a in results["attacks"]]
        assert list(results["exposed_by_attack"]) == names
        assert results["exposed"] == results["exposed_by_attack"][results["best_attack"]]
        for attack in results["attacks"]:
            for entry in attack["tpr_at_fpr"]:
                assert {"fpr", "value", "lo", "hi", "resolved"} <= set(entry)
                assert entry["resolved"] == (entry["fpr"] * attack["n_nonmembers"] >= 10)
        band = np.load(run.path / "arrays" / f"rocband-{results['best_attack']}.npy")
        assert band.shape[0] == 3 and band.shape[1] > 5
        assert np.all(np.diff(band[0]) > 0) and np.all(band[1] <= band[2])
        finding = [n for n in results["notes"] if n.startswith("At 1 % FPR the best calibrated attack")]
        assert len(finding) == 1 and "1 % FPR is not resolved with" in finding[0]  # < 1,000 non-member rows here
    assert "records.csv" in (study_runs["lm-mia"].path / "report.html").read_text()  # the report links it
