"""`ftaudit audit` end to end: records.csv (no text unless --reveal), nothing of the records' text in
the report or results, the gate (exit 3 / 0), and the verdict in results.json."""
import csv
import io
import json

import pytest

from ftaudit.cli import main


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    return info.value.code


def _run_dir(store):
    (run,) = store.glob("runs/*/results.json")  # one run per store
    return run.parent


def _rows(run_dir) -> list[dict]:
    return list(csv.DictReader(io.StringIO((run_dir / "records.csv").read_text())))


def test_records_csv_gate_and_reveal(world, tmp_path, capsys):
    store, other = tmp_path / "store", tmp_path / "other"
    common = ["audit", "--members", world.members, "--nonmembers", world.nonmembers, "--base", world.gpt_base,
              "-q", "--set", "metrics.bootstrap=100", "--fail-above", "auc=0.6"]

    assert cli(*common, "--model", world.gpt_model, "--out", str(store)) == 3  # the model leaks: the gate fires
    err = capsys.readouterr().err
    assert "gate auc=0.6: FAILED" in err and "lm-ratio" in err
    hidden = _run_dir(store)
    results = json.loads((hidden / "results.json").read_text())
    assert results["audit"]["gate"]["fired"] and "lm-ratio" in results["audit"]["gate"]["attacks"]
    rows = _rows(hidden)
    assert len(rows) == 80 and "text" not in rows[0]
    assert list(rows[0])[:5] == ["index", "set", "record", "id", "member"]
    assert {"lm-ratio", "lm-ratio_rank", "loss", "zlib", "min-k", "min-k++"} <= set(rows[0])
    # the audit does not leak what it audits: no record's text anywhere in the run directory
    stored = "".join(p.read_text(errors="ignore") for p in hidden.rglob("*") if p.suffix in (".csv", ".json", ".html", ".yaml"))
    assert not [t for t in world.members_list + world.nonmembers_list if t in stored]

    assert cli(*common, "--model", world.gpt_unseen, "--reveal", "--out", str(other)) == 0  # never saw them: passes
    assert "passed" in json.loads((_run_dir(other) / "results.json").read_text())["audit"]["gate"]["message"]
    shown = _rows(_run_dir(other))
    files = {"member": world.members_list, "nonmember": world.nonmembers_list}
    assert all(r["text"] == files[r["set"]][int(r["record"])] for r in shown)  # `record` is the file position
    assert all(r["member"] == ("1" if r["set"] == "member" else "0") for r in shown)
    assert sorted(int(r["lm-ratio_rank"]) for r in shown)[0] == 1
    # ids are salted per run: the same record gets another id in another run
    assert [r["id"] for r in shown] != [r["id"] for r in rows]
    assert len({r["id"] for r in shown}) == 80


def test_gate_at_an_unreported_fpr_adds_it(world, tmp_path):
    """--fail-above tpr@0.05=... adds 5 % to metrics.fprs, so the gate reads a computed rate."""
    store = tmp_path / "store"
    code = cli("audit", "--model", world.gpt_model, "--members", world.members, "--nonmembers", world.nonmembers,
               "--out", str(store), "-q", "--set", "metrics.bootstrap=50", "--fail-above", "tpr@0.05=0.2")
    results = json.loads((_run_dir(store) / "results.json").read_text())
    assert 0.05 in results["config"]["metrics"]["fprs"]
    assert results["audit"]["gate"]["metric"] == "tpr@0.05"
    assert code == (3 if results["audit"]["gate"]["fired"] else 0) == 3
    assert results["audit"]["base"] is None and "lm-ratio" not in {a["name"] for a in results["attacks"]}
    assert results["audit"]["verdict"]["attack"] == "loss"  # no base: the declared attack is LOSS


def test_run_audit_is_the_same_study_and_gate(world, tmp_path):
    """`ftaudit run audit --set audit.*` is the same audit, and its gate exits 3 too."""
    code = cli("run", "audit", "-q", "--set", f"audit.model={world.gpt_model}", "--set", f"audit.members={world.members}",
               "--set", f"audit.nonmembers={world.nonmembers}", "--set", "audit.fail_above=auc=0.6",
               "--set", "metrics.bootstrap=50", "--out", str(tmp_path))
    assert code == 3
    assert json.loads((_run_dir(tmp_path) / "results.json").read_text())["audit"]["gate"]["fired"]
