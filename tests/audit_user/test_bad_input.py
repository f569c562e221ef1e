"""Bad input to `ftaudit audit`: one line naming the flag and the fix, exit 2, and no model loaded
where the problem can be seen without loading one."""
import json

import pytest

import ftaudit.models.load as load
from ftaudit.cli import main


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(load, "load_model", refuse)


def _exit(capsys, *args) -> str:
    with pytest.raises(SystemExit) as info:
        main(["audit", "-q", *args])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def _cases(world, tmp_path) -> dict[str, tuple[list[str], str]]:
    from audit_user_world import gpt2, save, write_jsonl

    from ftaudit.data.tokenizer import train_tokenizer

    empty_dir = tmp_path / "not-a-model"
    empty_dir.mkdir()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    other_tok = train_tokenizer(world.others, vocab_size=300)
    other_base = save(gpt2(other_tok), other_tok, tmp_path / "other-base")
    wide = write_jsonl(tmp_path / "wide.jsonl", world.members_list[:4], [0, 1, 5, 1])  # label 5 of a 2-class model
    from ftaudit.empirical.canaries import inject

    manifest = tmp_path / "canaries.json"
    inject(world.members_list, n=4, seed=0, manifest=manifest)
    m, n = world.members, world.nonmembers
    return {
        "missing model": (["--model", str(tmp_path / "nope"), "--members", m, "--nonmembers", n], "--model"),
        "not a model dir": (["--model", str(empty_dir), "--members", m, "--nonmembers", n], "--model"),
        "pickle only": (["--model", str(pickled), "--members", m, "--nonmembers", n], "safetensors"),
        "empty members": (["--model", world.gpt_model, "--members", str(empty), "--nonmembers", n], "--members"),
        "missing nonmembers": (["--model", world.gpt_model, "--members", m, "--nonmembers", str(tmp_path / "x.txt")],
                               "--nonmembers"),
        "all overlap": (["--model", world.gpt_model, "--members", m, "--nonmembers", m], "both sets"),
        "no labels": (["--model", world.bert_model, "--members", m, "--nonmembers", n], "label"),
        "label out of range": (["--model", world.bert_model, "--members", wide, "--nonmembers", world.nonmembers_jsonl],
                               "outside the model's 2 classes"),
        "other tokenizer": (["--model", world.gpt_model, "--base", other_base, "--members", m, "--nonmembers", n],
                            "--base"),
        "bad gate": (["--model", world.gpt_model, "--members", m, "--nonmembers", n, "--fail-above", "tpr<5%"],
                     "audit.fail_above"),
        "gate over 1": (["--model", world.gpt_model, "--members", m, "--nonmembers", n, "--fail-above", "auc=60"],
                        "audit.fail_above"),
        "demo and model": (["--demo", "--model", world.gpt_model], "audit"),
        "no members": (["--model", world.gpt_model, "--nonmembers", n], "--members"),
        "manifest for a classifier": (["--model", world.bert_model, "--members", world.members_jsonl, "--nonmembers",
                                       world.nonmembers_jsonl, "--manifest", str(manifest)], "causal LM"),
        "epsilon without manifest": (["--model", world.gpt_model, "--members", m, "--nonmembers", n,
                                      "--accounted-epsilon", "1"], "manifest"),
        "bad task": (["--model", world.gpt_model, "--members", m, "--nonmembers", n, "--task", "regression"],
                     "audit.task"),
    }


def test_bad_input_exits_2_before_loading_a_model(world, tmp_path, capsys, no_loading):
    cases = _cases(world, tmp_path)
    capsys.readouterr()
    for name, (args, expected) in cases.items():
        print(name)
        err = _exit(capsys, *args, "--out", str(tmp_path / "store"))
        assert expected in err, f"{name}: {err}"
    assert not list((tmp_path / "store").glob("runs/*"))  # nothing stored


def test_stored_in_memory_config_is_refused(tmp_path, capsys):
    """A stored config naming an in-memory object (of a finished ftaudit.audit call) cannot re-run: exit 2."""
    err = _exit(capsys, "--set", "audit.model=memory:1-abc", "--members", "x.txt", "--nonmembers", "y.txt",
                "--out", str(tmp_path))
    assert "in-memory object that no longer exists" in err
