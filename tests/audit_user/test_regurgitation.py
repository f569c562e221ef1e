"""Regurgitation (causal LMs): a tiny GPT-2 fine-tuned many epochs on its members completes them
verbatim far more often than the non-member control; a model that never saw either set does not;
short records are skipped and counted; no text leaves the audit without --reveal."""
import csv
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest

from audit_user_world import finetune_lm, gpt2, record_sets, save, write_txt
from ftaudit.cli import main
from ftaudit.studies.audit.regurgitation import COLUMNS, cut, regurgitation


@pytest.fixture(scope="module")
def lm_world(shakespeare, small_tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("regurgitation")
    members, nonmembers, others = record_sets(shakespeare)
    tok = small_tok
    w = SimpleNamespace(tok=tok, members_list=members, nonmembers_list=nonmembers,
                        memorised=finetune_lm(gpt2(tok), tok, members, epochs=40, lr=1e-2),
                        unseen=finetune_lm(gpt2(tok), tok, others, epochs=40, lr=1e-2),
                        members=write_txt(root / "members.txt", members),
                        nonmembers=write_txt(root / "nonmembers.txt", nonmembers))
    w.ids = [tok(t, add_special_tokens=False)["input_ids"] for t in members + nonmembers]
    w.member = np.repeat([True, False], [len(members), len(nonmembers)])
    w.model_dir = save(w.memorised, tok, root / "model")
    return w


def _run(model, w, **kw):
    kw = {"prefix_tokens": 8, "suffix_tokens": 8, "samples": 4, "n_boot": 300, **kw}
    return regurgitation(SimpleNamespace(model=model), w.ids, w.member, **kw)


def test_memorised_members_are_regurgitated_above_the_control(lm_world):
    info, columns = _run(lm_world.memorised, lm_world)
    greedy = info["rates"]["greedy_exact"]
    assert greedy["difference"]["lo"] > 0 and greedy["above_control"]
    assert greedy["member"]["value"] > greedy["nonmember"]["value"]
    assert "greedy_exact" in info["above_control"]
    assert info["rates"]["sampled_exact"]["member"]["value"] >= greedy["member"]["value"]  # greedy ⊂ any sample, roughly
    assert {int(v) for v in columns["greedy_exact"]} <= {0, 1}
    assert all(0 <= int(v) <= 8 for v in columns["prefix_match_len"])
    assert _run(lm_world.memorised, lm_world)[0] == info  # seeded: the same numbers again


def test_unseen_model_is_not_above_the_control(lm_world):
    info, _ = _run(lm_world.unseen, lm_world)
    for k in ("greedy_exact", "sampled_exact", "near_exact"):
        d = info["rates"][k]["difference"]
        assert d["lo"] <= 0 <= d["hi"], (k, d)
    assert not info["rates"]["greedy_exact"]["above_control"]


def test_short_records_are_skipped_and_counted(lm_world):
    w = lm_world
    plen = cut(w.ids, 32, 16)
    long_enough = np.array([min(32, len(r) // 2) + 16 <= len(r) for r in w.ids])
    assert ((plen > 0) == long_enough).all() and 0 < long_enough.sum() < len(w.ids)
    info, columns = _run(w.memorised, w, prefix_tokens=32, suffix_tokens=16, samples=1)
    c = info["counts"]
    assert c["members_short"] == int((w.member & ~long_enough).sum())
    assert c["nonmembers_short"] == int((~w.member & ~long_enough).sum())
    assert c["members_generated"] + c["nonmembers_generated"] == int(long_enough.sum())
    assert all((columns["greedy_exact"][i] == "") == (not long_enough[i]) for i in range(len(w.ids)))
    capped, _ = _run(w.memorised, w, per_set=5, samples=0)  # regurgitation_records bounds the cost
    assert capped["counts"]["members_generated"] == 5 and capped["counts"]["nonmembers_generated"] == 5
    assert capped["rates"]["greedy_exact"]["member"]["n"] == 5


def _cli(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    return info.value.code


def test_audit_wiring_without_text(lm_world, tmp_path):
    w = lm_world
    store = tmp_path / "store"
    assert _cli("audit", "--model", w.model_dir, "--members", w.members, "--nonmembers", w.nonmembers, "-q",
                "--out", str(store), "--set", "metrics.bootstrap=100", "--set", "audit.prefix_tokens=8",
                "--set", "audit.suffix_tokens=8") == 0
    (results,) = store.glob("runs/*/results.json")
    run = results.parent
    r = json.loads(results.read_text())
    reg = r["audit"]["regurgitation"]
    assert reg["prefix_tokens"] == 8 and reg["rates"]["greedy_exact"]["above_control"]
    assert any(s["title"] == "Regurgitation" for s in r["sections"])
    rows = list(csv.DictReader(io.StringIO((run / "records.csv").read_text())))
    assert set(COLUMNS) <= set(rows[0]) and "text" not in rows[0]
    stored = "".join(p.read_text(errors="ignore") for p in run.rglob("*") if p.suffix in (".csv", ".json", ".html", ".yaml"))
    assert "Regurgitation" in stored
    assert not [t for t in w.members_list + w.nonmembers_list if t in stored]

    off = tmp_path / "off"
    assert _cli("audit", "--model", w.model_dir, "--members", w.members, "--nonmembers", w.nonmembers, "-q",
                "--out", str(off), "--set", "metrics.bootstrap=100", "--no-regurgitation") == 0
    (results,) = off.glob("runs/*/results.json")
    assert json.loads(results.read_text())["audit"]["regurgitation"] is None
    assert "greedy_exact" not in (results.parent / "records.csv").read_text().splitlines()[0]
