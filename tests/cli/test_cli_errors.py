"""Every bad input: one line naming the field and the fix, exit code 2, no traceback."""
import subprocess
import sys

import pytest

from ftaudit.cli import main


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.mark.parametrize("argv, field", [
    (["run", "no-such-study"], "study"),
    (["run", "--set", "finetune.epochz=3"], "finetune.epochz"),
    (["run", "--set", "finetune.epochs=many"], "finetune.epochs"),
    (["run", "--set", "finetune.references=-2"], "finetune.references"),
    (["run", "--set", "data.audit_size=0"], "data.audit_size"),
    (["run", "--set", "finetune.epochs"], "--set"),
    (["run", "--config", "/no/such/file.yaml"], "--config"),
    (["run", "--set", "attack.names=[loss, nope]"], "attack.names[1]"),
    (["report", "no-such-run"], "RUN"),
    (["run", "--set", "data.audit_size=10", "--set", "finetune.batch_size=1"], "finetune.batch_size"),
    (["run", "--set", "data.pretrain_size=1700"], "data.pretrain_size"),
    (["run", "--set", "attack.params={rmia-online: {gamma: -1}}"], "attack.params.rmia-online.gamma"),
    (["run", "--set", "attack.targets=99"], "attack.targets"),
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, field):
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "store"))
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {field}:") and "—" in lines[0]
    assert "Traceback" not in err


def test_out_that_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, "run", "--out", str(blocker / "store"))
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unparsable_config_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {audit_size: 10\n")
    code, _, err = run_cli(capsys, "run", "--config", str(bad), "--out", str(tmp_path / "s"))
    assert code == 2 and "--config" in err and "YAML" in err


def test_bad_input_leaves_the_store_untouched(capsys, tmp_path, tiny_overrides):
    store = tmp_path / "store"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    with pytest.raises(SystemExit) as ok:
        main(["run", "-q", *sets])
    assert ok.value.code in (0, None)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    code, _, _ = run_cli(capsys, "run", "-q", *sets, "--set", "finetune.lr=-1")
    assert code == 2
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_python_m_ftaudit_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ftaudit", "run", "--set", "model.arch=transformer"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "model.arch" in proc.stderr
