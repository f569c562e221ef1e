"""Scenario ``stealing`` end to end through the CLI on tiny sizes: victims that learn, identification
of a known base, students from the identified base stay near the victim while random init and a
wrong base do not, the report has its sections, a rerun trains nothing, bad settings exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ftaudit.cli import main
from ftaudit.store.db import RunDB

TINY = ["stealing.vocab_size=300", "stealing.candidates=['1x32:wikitext2:0','1x32:shakespeare:0','2x64:wikitext2:0']",
        "stealing.block_len=32", "stealing.pretrain_blocks=512", "stealing.pretrain_epochs=8", "stealing.task_corpus=wikitext2", "stealing.classes=2", "stealing.train_per_class=32",
        "stealing.test_per_class=16", "stealing.victim_methods=['head','full']", "stealing.victim_seeds=1",
        "stealing.victim_epochs=12", "stealing.id_budgets=[8,48]", "stealing.budgets=[16,48]", "stealing.distill_steps=12",
        "stealing.latency_lengths=[8,32]", "stealing.latency_batches=[1,8]", "stealing.latency_repeats=3",
        "stealing.prune_fractions=[0.0,0.05,1.0]", "metrics.bootstrap=50"]


def sets(overrides, store):
    return [a for o in overrides + [f"out={store}"] for a in ("--set", o)]


def cli_run(overrides, store):
    try:
        main(["run", "stealing", "-q", *sets(overrides, store)])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    runs = RunDB(store / "ftaudit.sqlite").runs()
    run_dir = Path(runs[-1].path)
    return json.loads((run_dir / "results.json").read_text()), runs[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("stealing") / "store"


def latency_names_the_true_architecture(real):
    """The real latency identification (timings measured, cached, reported), with its answer replaced
    by each victim's true architecture. Wall-clock timings of two tiny encoders are at the mercy of
    whatever else the machine runs (under a parallel test run they misnamed an architecture, the
    attacker then picked a base of another shape, and the distances below had nothing to compare);
    what latency tells apart on a quiet machine is tested in test_latency.py."""
    def identification(st, cands, vics, seed, cached):
        _, dists = real(st, cands, vics, seed, cached)
        return {v.index: cands[v.base].candidate.arch for v in vics}, dists
    return identification


def run_with_true_architectures(store):
    from ftaudit.studies.stealing import identification

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(identification, "latency_identification",
                      latency_names_the_true_architecture(identification.latency_identification))
        return cli_run(TINY, store)


@pytest.fixture(scope="module")
def run(store):
    return run_with_true_architectures(store)


def section(results, title):
    return next(s for s in results["sections"] if s["title"] == title)


def test_report_has_every_step(run):
    results, _ = run
    titles = [s["title"] for s in results["sections"]]
    for title in ("Setup", "Base identification", "Weight estimation vs query budget", "Weight-extraction pruning"):
        assert title in titles
    assert {a["name"] for a in results["attacks"]} == {"probe-fit", "latency", "latency+probe"}
    # candidates are stored as HF directories
    store_root = Path(results["config"]["out"])
    dirs = list((store_root / "cache" / "candidates").glob("*/config.json"))
    assert len(dirs) == 3


def test_confidence_intervals_are_clustered_by_victim(run):
    """The pooled (victim, candidate) rows' cluster is the victim: 6 victims × 3 candidates here, every
    victim's rows one cluster, one member (its base) each; the member rate is per victim."""
    results, record = run
    arrays = Path(record.path) / "arrays"
    example, target, labels = (np.load(arrays / f"{n}.npy") for n in ("example", "target", "labels"))
    n_victims = 2 * 1 * 3  # methods × seeds × candidates
    np.testing.assert_array_equal(example, np.repeat(np.arange(n_victims), 3))
    np.testing.assert_array_equal(target, example)
    assert np.bincount(example, weights=labels).tolist() == [1.0] * n_victims
    assert all(e["member_rate"] == pytest.approx(1 / 3) for e in results["exposed"])
    detection = section(results, "Base identification as detection")["table"]
    assert {r["attack"] for r in detection if r["AUC"]} == {"probe-fit", "latency", "latency+probe"}
    assert all(r["verdict (AUC)"] in ("not resolved", f"{r['attack']} beats {r['paired against']}",
                                      f"{r['paired against']} beats {r['attack']}") for r in detection if r["paired against"])


def test_victims_learn_their_task(run):
    """Every method's victims beat chance (a constant guess: 50 %) on the held-out blocks, CI included."""
    results, _ = run
    rows = section(results, "Victims")["table"]
    assert [r["method"] for r in rows] == ["head", "full"]
    for r in rows:
        lo = float(r["task accuracy"].split("[")[1].split("%")[0])
        assert lo > 50.0, r
    moved = {r["method"]: float(r["encoder moved ‖θ_victim − θ_base‖ / ‖θ_base‖"].split()[0]) for r in rows}
    assert moved["head"] == 0.0 and 0.0 < moved["full"] < 0.5


def test_identification_finds_head_only_victims_base(run):
    """A head-only victim is a linear-ish function of its base's features: with 48 queries the probe
    names its base."""
    results, _ = run
    rows = section(results, "Base identification")["table"]
    head = next(r for r in rows if r["queries"] == 48 and str(r["victims"]).startswith("head"))
    assert head["accuracy"].startswith("100.0%")


def test_students_from_the_identified_base_stay_near_the_victim(run):
    """Starting from the identified base keeps the student at about the victim's own distance from
    its base; random init and a wrong base of the same architecture start (and stay) far away."""
    results, _ = run
    rows = [r for r in section(results, "Weight estimation vs query budget")["table"] if r["queries"] == 48]
    dist = {(r["victim"], r["student starts from"]): float(r["distance to victim"]) for r in rows}
    for victim in {r["victim"] for r in rows}:
        ident = dist[(victim, "identified base")]
        assert ident < 0.5 * dist[(victim, "random init")] and ident < 0.5 * dist[(victim, "wrong base")], dist


def test_rerun_trains_nothing(run, store):
    _, first = run
    results, again = run_with_true_architectures(store)
    assert run[0]["cache"]["models_trained"] > 0
    assert results["cache"]["models_trained"] == 0 and results["cache"]["models_loaded"] == run[0]["cache"]["models_trained"]
    probe = lambda r: [row for row in section(r, "Base identification")["table"]  # noqa: E731
                       if row["step"].startswith("base from outputs")]  # latency rows are fresh measurements
    assert probe(results) == probe(run[0])


@pytest.mark.parametrize("override,field", [
    ("stealing.candidates=['2-64:wikitext2:0','1x32:wikitext2:0']", "stealing"),
    ("stealing.victim_methods=['nope']", "stealing"),
    ("finetune.lr=0.1", "finetune.lr"),
    ("stealing.id_budgets=[2]", "stealing"),
    ("stealing.victim_lrs={'full':0.001}", "stealing"),
    ("stealing.latency_lengths=[8,64]", "stealing"),
    ("stealing.budgets=[2,48]", "stealing.budgets"),
    ("lm.block_len=16", "lm"),  # not in the study's schema (stealing.block_len is)
])
def test_bad_settings_exit_2(override, field, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "stealing", "-q", *sets(TINY + [override], tmp_path / "s")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
