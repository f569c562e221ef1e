"""The default scenario on real (small) digits models, where membership is known by construction."""
import sqlite3

import numpy as np
import pytest

import ftaudit
from ftaudit.config import AttackConfig
from ftaudit.store.cache import ModelCache

SMALL = ["model.arch=mlp", "model.hidden=[64]", "data.audit_size=120", "data.population_size=120",
         "pretrain.epochs=10", "finetune.epochs=40", "finetune.references=7", "metrics.bootstrap=200",
         "pretrain.augment=0", "finetune.augment=0"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return ftaudit.run("finetune-mia", overrides=SMALL + [f"out={tmp_path_factory.mktemp('s') / 'store'}"])


def test_members_score_higher_on_real_fine_tunes(small_run):
    attacks = {a["name"]: a for a in small_run.results["attacks"]}
    assert set(attacks) == set(AttackConfig().names)
    # overfit fine-tunes leak: the calibrated attack's whole CI is above chance
    assert attacks["lira-online"]["auc"]["lo"] > 0.5
    for a in attacks.values():
        assert a["auc"]["value"] > 0.5, a["name"]
        assert a["auc"]["lo"] <= a["auc"]["value"] <= a["auc"]["hi"]
        assert a["n_members"] == a["n_nonmembers"] == 8 * 120 // 2


def test_pooled_arrays_match_the_keep_matrix(small_run):
    arrays = small_run.path / "arrays"
    labels = np.load(arrays / "labels.npy")
    example = np.load(arrays / "example.npy")
    target = np.load(arrays / "target.npy")
    assert labels.shape == example.shape == target.shape == (8 * 120,)
    # every example is a member of exactly half of the targets
    assert (np.bincount(example, weights=labels) == 4).all()
    assert (small_run.path / "report.html").is_file()


def test_utility_reports_accuracy_and_transfer_control(small_run):
    util = {u["name"]: u for u in small_run.results["utility"]}
    assert util["fine-tuned test accuracy"]["value"] > 0.8
    assert "from-scratch test accuracy (control)" in util
    assert small_run.results["timings"]["total"] > 0


def test_head_method_trains_only_the_head(tmp_path):
    res = ftaudit.run("finetune-mia", overrides=SMALL + [f"out={tmp_path}", "finetune.method=head", "finetune.lr=0.01",
                                                          "finetune.references=3", "metrics.bootstrap=20"])
    cache = ModelCache(tmp_path / "cache")
    keys = dict(sqlite3.connect(tmp_path / "ftaudit.sqlite").execute(
        "SELECT role || idx, model_key FROM run_models WHERE run_id = ?", (res.run_id,)).fetchall())
    base, tuned = cache.load(keys["pretrain0"]), cache.load(keys["finetune0"])
    for name, value in base.items():
        assert (name.startswith("head.") != bool((value == tuned[name]).all())), name


def test_class_split_fine_tunes_a_new_head(tmp_path):
    res = ftaudit.run("finetune-mia", overrides=SMALL + [f"out={tmp_path}", "data.split=classes", "finetune.references=3",
                                                          "metrics.bootstrap=20", "data.population_size=100"])
    assert "[0, 1, 2, 3, 4] → [5, 6, 7, 8, 9]" in res.results["title"]
    assert set(np.load(res.path / "arrays" / "audit_y.npy")) == {5, 6, 7, 8, 9}
    util = {u["name"]: u for u in res.results["utility"]}
    assert util["fine-tuned test accuracy"]["value"] > 0.6
    assert "pretrained base test accuracy (pretraining task)" in util
