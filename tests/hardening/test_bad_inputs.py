"""Bad input, table-driven: through the CLI (in-process) and the Python API, every case must give
exactly one line on stderr naming the exact field, exit 2, no traceback, and leave a pre-populated
store byte-identical. A few YAML bombs also go through a real subprocess (``python -m ftaudit``).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ftaudit
from ftaudit.cli import main
from ftaudit.errors import UserError

from study_settings import SMALL

TINY = ["data.audit_size=60", "data.population_size=40", "pretrain.epochs=3", "finetune.epochs=4",
        "finetune.references=3", "metrics.bootstrap=50", "model.arch=mlp", "model.hidden=[32]", "pretrain.augment=0",
        "finetune.augment=0"]
MAX_LINE = 1200  # one line of stderr, however large the input it complains about


def tree_digest(root: Path) -> str:
    """sha256 over every path under ``root`` and every file's bytes ("absent" if it does not exist)."""
    if not root.exists():
        return "absent"
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store holding one complete tiny run (a few seconds)."""
    root = tmp_path_factory.mktemp("hardening") / "store"
    with pytest.raises(SystemExit) as info:
        main(["run", "-q", "--out", str(root), *[a for o in TINY for a in ("--set", o)]])
    assert info.value.code in (0, None)
    assert (root / "ftaudit.sqlite").is_file() and len([p for p in (root / "runs").iterdir()]) == 1
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Bad config files of every kind."""
    d = tmp_path_factory.mktemp("configs")
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    assert len(laughs.encode()) < 600  # the classic "billion laughs": ~9^9 strings from a few hundred bytes
    made = {
        "laughs": laughs,
        "nested": "seed: " + "[" * 20000 + "]" * 20000 + "\n",
        "big_list": "seeds: [" + ", ".join(str(i) for i in range(400_000)) + "]\n",  # ~2.7 MB
        "not_a_mapping": "- a\n- b\n",
        "syntax": "finetune: {epochs: 3\n",
        "unknown_section": "finetun:\n  epochs: 3\n",
        "merge_key": "base: &b {epochs: 3}\nfinetune:\n  <<: *b\n",
        "huge_int": "seed: " + "9" * 5000 + "\n",
    }
    out = {}
    for name, text in made.items():
        (d / f"{name}.yaml").write_text(text)
        out[name] = str(d / f"{name}.yaml")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01seed: 3\n")
    out["binary"] = str(d / "binary.yaml")
    (d / "a_directory").mkdir()
    out["directory"] = str(d / "a_directory")
    os.mkfifo(d / "fifo.yaml")
    out["fifo"] = str(d / "fifo.yaml")
    return out


def sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def nest(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


# (id, argv after `ftaudit`, the exact field the line must start with). `run` cases get the tiny
# settings first (so a wrongly accepted case finishes fast, and fails the test) and --out STORE last.
RUN_CASES = [
    # numbers out of bounds, infinities, NaN, wrong types (strict: no bool for a number, no 3.5 for a count)
    ("seed-2^64", sets("seed=99999999999999999999"), "seed"),
    ("seed-negative", sets("seed=-1"), "seed"),
    ("seed-bool", sets("seed=true"), "seed"),
    ("seeds-repeat", sets("seeds=[1, 1]"), "seeds"),
    ("seeds-negative", sets("seeds=[-3]"), "seeds[0]"),
    ("lr-inf", sets("finetune.lr=.inf"), "finetune.lr"),
    ("lr-1e300", sets("finetune.lr=1.0e300"), "finetune.lr"),
    ("lr-nan", sets("finetune.lr=.nan"), "finetune.lr"),
    ("lr-zero", sets("finetune.lr=0"), "finetune.lr"),
    ("lr-bool", sets("finetune.lr=true"), "finetune.lr"),
    ("references-1e9", sets("finetune.references=1000000000"), "finetune.references"),
    ("epochs-1e12-text", sets("finetune.epochs=1e12"), "finetune.epochs"),
    ("epochs-1e12", sets("finetune.epochs=1000000000000"), "finetune.epochs"),
    ("epochs-fraction", sets("finetune.epochs=3.5"), "finetune.epochs"),
    ("epochs-bool", sets("finetune.epochs=true"), "finetune.epochs"),
    ("channels-1e8", sets("model.arch=cnn", "model.channels=[100000000, 64]"), "model.channels[0]"),
    ("hidden-zero", sets("model.hidden=[0]"), "model.hidden[0]"),
    ("hidden-empty", sets("model.hidden=[]"), "model.hidden"),
    ("bootstrap-1e12", sets("metrics.bootstrap=1000000000000"), "metrics.bootstrap"),
    ("bootstrap-few", sets("metrics.bootstrap=5"), "metrics.bootstrap"),
    ("ci-level", sets("metrics.ci_level=1.5"), "metrics.ci_level"),
    ("fprs-zero", sets("metrics.fprs=[0, 0.5]"), "metrics.fprs"),
    ("exposed-negative", sets("metrics.exposed=-1"), "metrics.exposed"),
    ("batch-zero", sets("finetune.batch_size=0"), "finetune.batch_size"),
    ("momentum-one", sets("finetune.momentum=1"), "finetune.momentum"),
    ("dp-epsilon-negative", sets("finetune.dp.epsilon=-1"), "finetune.dp.epsilon"),
    ("dp-epsilon-nan", sets("finetune.dp.epsilon=.nan"), "finetune.dp.epsilon"),
    ("dp-delta-one", sets("finetune.dp.delta=1"), "finetune.dp.delta"),
    ("chunk-zero", sets("engine.chunk=0"), "engine.chunk"),
    ("threads-1e5", sets("engine.threads=100000"), "engine.threads"),
    ("audit-size-digits", sets("data.audit_size=100000"), "data.audit_size"),
    ("classes-repeat", sets("data.pretrain_classes=[1, 1]"), "data.pretrain_classes"),
    ("classes-overlap", sets("data.split=classes", "data.finetune_classes=[0, 5]"), "data.finetune_classes"),
    ("list-of-2000", sets("metrics.fprs=[" + ", ".join(["0.5"] * 2000) + "]"), "metrics.fprs"),
    # attacks and their parameters
    ("gamma-bool", sets("attack.params={rmia-online: {gamma: true}}"), "attack.params.rmia-online.gamma"),
    ("gamma-inf", sets("attack.params={rmia-online: {gamma: .inf}}"), "attack.params.rmia-online.gamma"),
    ("gamma-negative", sets("attack.params={rmia-online: {gamma: -1}}"), "attack.params.rmia-online.gamma"),
    ("param-unknown", sets("attack.params={rmia-online: {gama: 2}}"), "attack.params.rmia-online.gama"),
    ("param-attack-typo", sets("attack.params={rmia-onlin: {gamma: 2}}"), "attack.params.rmia-onlin"),
    ("attack-typo", sets("attack.names=[loss, lira-onlin]"), "attack.names[1]"),
    ("attacks-none", sets("attack.names=[]"), "attack.names"),
    ("shifts", sets("attack.shifts=5"), "attack.shifts"),
    ("targets", sets("attack.targets=99"), "attack.targets"),
    # the cost estimate: each field within its bounds, together beyond any machine
    ("budget-compute", sets("model.hidden=[8192, 8192]", "finetune.references=4000", "finetune.epochs=10000"),
     "finetune.references"),
    ("budget-memory", sets("model.hidden=[8192, 8192]", "finetune.references=64", "engine.chunk=64"), "engine.chunk"),
    ("budget-bootstrap", sets("metrics.bootstrap=100000", "finetune.references=4000", "data.audit_size=1400"),
     "metrics.bootstrap"),
    # --set syntax and YAML limits
    ("set-no-equals", ["--set", "finetune.epochs"], "--set"),
    ("set-empty-key", ["--set", "=3"], "--set"),
    ("set-empty-part", ["--set", "finetune..epochs=3"], "--set"),
    ("set-too-long", ["--set", "seeds=[" + "1, " * 30000 + "1]"], "--set"),
    ("set-too-deep", ["--set", f"finetune.epochs={nest(40)}"], "finetune.epochs"),
    ("set-anchor", ["--set", "finetune.epochs=&a 3"], "finetune.epochs"),
    ("set-alias", ["--set", "attack.names=[*a]"], "attack.names"),
    ("set-into-a-value", ["--set", "finetune.epochs.x=3"], "finetune.epochs.x"),
    ("key-typo", ["--set", "finetune.epochz=3"], "finetune.epochz"),
    ("section-typo", ["--set", "finetun.epochs=3"], "finetun"),
    ("out-empty", ["--set", "out="], "out"),
    ("out-blank", ["--set", "out=   "], "out"),
    ("out-list", ["--set", "out=[a]"], "out"),
    ("study-typo", ["finetune-mi"], "study"),
]

# cases of other studies: that study's small settings first, the bad override last
STUDY_CASES = [
    ("methods-attack", "methods", ["sweep.attack=nope"], "sweep.attack"),
    ("methods-lr", "methods", ["sweep.lrs=[-1]"], "sweep.lrs[0]"),
    ("methods-method", "methods", ["sweep.methods=[full, lorra]"], "sweep.methods"),
    ("dp-headline", "dp-finetune", ["sweep.headline_epsilon=3"], "sweep.headline_epsilon"),
    ("dp-epsilon-nan", "dp-finetune", ["sweep.epsilons=[.nan]"], "sweep.epsilons[0]"),
    ("forgetting-odd", "forgetting", ["forgetting.models=5"], "forgetting.models"),
    ("forgetting-checkpoints", "forgetting", ["forgetting.checkpoints=[5, 3]"], "forgetting.checkpoints"),
    ("forgetting-engine", "forgetting", ["engine.vectorized=false"], "engine"),
    ("tmi-odd", "tmi", ["tmi.shadows=5"], "tmi.shadows"),
    ("tmi-counts", "tmi", ["tmi.shadow_counts=[2, 99]"], "tmi.shadow_counts[1]"),
    ("tmi-lrs", "tmi", ["tmi.methods=[lora]", "tmi.lrs={head: 0.01}"], "tmi.lrs"),
    ("tmi-text-heads", "tmi-text", ["tmi.n_head=3"], "tmi.n_head"),
    ("lm-heads", "lm-mia", ["lm.n_head=3"], "lm.n_head"),
    ("lm-vocab", "lm-mia", ["lm.vocab_size=100000000"], "lm.vocab_size"),
    ("lm-methods-attack", "lm-methods", ["sweep.attack=lm-rati"], "sweep.attack"),
    ("extraction-suffix", "lm-extraction", ["extraction.suffix_len=30"], "extraction.suffix_len"),
    ("extraction-digits", "lm-extraction", ["extraction.canary_digits=4", "extraction.references=20000"],
     "extraction.canary_digits"),
    ("stealing-width", "stealing", ["stealing.candidates=['1x15:wikitext2:0','1x16:shakespeare:0']"], "stealing.candidates"),
    ("stealing-lrs", "stealing", ["stealing.victim_methods=[full]", "stealing.victim_lrs={head: 0.01}"], "stealing.victim_lrs"),
    # refused inside the study, before any tokenizer is trained and cached
    ("mlm-blocks", "mlm-ratio", ["lm.n_blocks=100000"], "lm.n_blocks"),
    ("stealing-classes", "stealing", ["stealing.classes=1000"], "stealing.classes"),
    ("stealing-query-corpus", "stealing", ["stealing.query_corpus=no-such-corpus.txt"], "stealing.query_corpus"),
    ("audit-odd-references", "audit", ["audit.references=3", "audit.recipe=r.yaml", "audit.population=p.txt",
                                       "audit.base=b"], "audit.references"),
]

FILE_CASES = [  # --config FILE: (id, files key, field, words the problem must contain)
    ("billion-laughs", "laughs", "--config", "anchor"),
    ("nested-20000", "nested", "--config", "deep"),
    ("big-list", "big_list", "--config", "bytes"),
    ("merge-key", "merge_key", "--config", "anchor"),
    ("not-a-mapping", "not_a_mapping", "--config", "mapping"),
    ("syntax", "syntax", "--config", "YAML"),
    ("binary", "binary", "--config", "text"),
    ("directory", "directory", "--config", "directory"),
    ("fifo", "fifo", "--config", "regular file"),
    ("dev-zero", "/dev/zero", "--config", "regular file"),
    ("missing", "/no/such/config.yaml", "--config", "not found"),
    ("huge-int", "huge_int", "--config", "digits"),
    ("unknown-section", "unknown_section", "finetun", "did you mean 'finetune'"),
]


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def assert_one_line(code: int, out: str, err: str, field: str) -> str:
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[:3000]
    line = lines[0]
    assert line.startswith(f"error: {field}: "), line[:300]
    assert " — " in line and len(line) < MAX_LINE, line[:300]
    return line


@pytest.mark.parametrize("argv, field", [pytest.param(a, f, id=i) for i, a, f in RUN_CASES])
def test_run_refuses(capsys, store, tmp_path, monkeypatch, argv, field):
    monkeypatch.chdir(tmp_path)  # the out= cases must not write a store anywhere
    before = tree_digest(store)
    study = argv[:1] if argv and not argv[0].startswith("-") else []
    rest = argv[len(study):]
    store_args = [] if any(a.startswith("out=") for a in rest) else ["--out", str(store)]
    code, out, err = run_cli(capsys, ["run", *study, "-q", *sets(*TINY), *rest, *store_args])
    assert_one_line(code, out, err, field)
    assert tree_digest(store) == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("study, overrides, field", [pytest.param(s, o, f, id=i) for i, s, o, f in STUDY_CASES])
def test_study_refuses(capsys, store, study, overrides, field):
    before = tree_digest(store)
    code, out, err = run_cli(capsys, ["run", study, "-q", *sets(*SMALL[study], *overrides), "--out", str(store)])
    assert_one_line(code, out, err, field)
    assert tree_digest(store) == before


@pytest.mark.parametrize("key, field, words", [pytest.param(k, f, w, id=i) for i, k, f, w in FILE_CASES])
def test_config_file_refused(capsys, store, files, key, field, words):
    before = tree_digest(store)
    path = files.get(key, key)
    code, out, err = run_cli(capsys, ["run", "-q", "--config", path, "--out", str(store)])
    line = assert_one_line(code, out, err, field)
    assert words in line
    assert tree_digest(store) == before


def test_did_you_mean(capsys, store):
    _, _, err = run_cli(capsys, ["run", "-q", "--set", "finetune.epochz=3", "--out", str(store)])
    assert "did you mean 'finetune.epochs'?" in err
    _, _, err = run_cli(capsys, ["run", "finetune-mi", "-q", "--out", str(store)])
    assert "did you mean 'finetune-mia'?" in err
    _, _, err = run_cli(capsys, ["run", "-q", "--set", "attack.names=[lira-onlin]", "--out", str(store)])
    assert "did you mean 'lira-online'?" in err


def test_empty_out_writes_nothing_anywhere(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, ["run", "-q", *sets(*TINY), "--set", "out="])
    assert_one_line(code, out, err, "out")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------- API


def _api_cases(store: Path, files: dict[str, str]):
    s = str(store)
    return [
        ("config-int", lambda: ftaudit.run(config=123, out=s), "--config"),
        ("config-directory", lambda: ftaudit.run(config=files["directory"], out=s), "--config"),
        ("study-int", lambda: ftaudit.run(study=123, out=s), "study"),
        ("study-typo", lambda: ftaudit.run(study="finetune-mi", out=s), "study"),
        ("overrides-str", lambda: ftaudit.run(overrides="finetune.epochs=3", out=s), "overrides"),
        ("kwarg-typo", lambda: ftaudit.run(epochz=3, out=s), "epochz"),
        ("lr-inf", lambda: ftaudit.run(finetune__lr=float("inf"), out=s), "finetune.lr"),
        ("seed-2^64", lambda: ftaudit.run(seed=2**64, out=s), "seed"),
        ("seeds-million", lambda: ftaudit.run(seeds=list(range(10**6)), out=s), "seeds"),
        ("gamma-bool", lambda: ftaudit.run(attack__params={"rmia-online": {"gamma": True}}, out=s),
         "attack.params.rmia-online.gamma"),
        ("reporter", lambda: ftaudit.run(reporter=5, out=s), "reporter"),
        ("big-list-file", lambda: ftaudit.run(config=files["big_list"], out=s), "--config"),
        ("load-int", lambda: ftaudit.load_run(123, out=s), "run"),
        ("load-missing", lambda: ftaudit.load_run("no-such-run", out=s), "RUN"),
        ("audit-out-int", lambda: ftaudit.audit(demo=True, out=7), "out"),
    ]


API_IDS = ["config-int", "config-directory", "study-int", "study-typo", "overrides-str", "kwarg-typo", "lr-inf",
           "seed-2^64", "seeds-million", "gamma-bool", "reporter", "big-list-file", "load-int", "load-missing",
           "audit-out-int"]


@pytest.mark.parametrize("case", API_IDS)
def test_api_refuses(store, files, case):
    before = tree_digest(store)
    call, field = {i: (c, f) for i, c, f in _api_cases(store, files)}[case]
    with pytest.raises(UserError) as info:
        call()
    assert info.value.field == field
    line = info.value.one_line()
    assert "\n" not in line and len(line) < MAX_LINE
    assert tree_digest(store) == before


def test_long_messages_are_capped():
    err = UserError("x" * 10_000, "y" * 5_000_000, "z" * 10_000)
    line = err.one_line()
    assert len(line) < MAX_LINE and line.count("…") == 3 and "\n" not in line


# ----------------------------------------------------------------------------------- subprocess


@pytest.mark.parametrize("key", ["laughs", "nested"])
def test_yaml_bombs_in_a_real_process(files, tmp_path, key):
    proc = subprocess.run([sys.executable, "-m", "ftaudit", "config", "--config", files[key]],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: --config: ") and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_markup_in_user_strings_is_printed_verbatim(capsys, tmp_path):
    """A store path with rich markup in it ("[/]", "[bold]") is printed as it is, not parsed."""
    out = tmp_path / "m[/]x[bold]"
    with pytest.raises(SystemExit) as info:
        main(["run", "-q", *sets(*TINY), "--out", str(out)])
    captured = capsys.readouterr()
    assert info.value.code in (0, None), captured.err[-2000:]
    assert "m[/]x[bold]" in captured.out.replace("\n", "")
    with pytest.raises(SystemExit):
        main(["ls", "--out", str(tmp_path / "n[/]")])
    assert "n[/]" in capsys.readouterr().out
