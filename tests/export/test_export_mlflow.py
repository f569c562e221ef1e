"""`ftaudit export RUN --mlflow`: what MLflow reads back equals results.json; to_frame; the digits
models' safetensors export. One tiny digits run is shared by the module."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from ftaudit.cli import main
from ftaudit.export.mlflow import clean, metrics_of, params_of
from study_settings import SMALL


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    import ftaudit

    store = tmp_path_factory.mktemp("store")
    return ftaudit.run("finetune-mia", overrides=SMALL["finetune-mia"], out=str(store)), store


@pytest.fixture
def no_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # the test machine is offline
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def cli(capsys, *argv):
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_mlflow_reads_back_every_metric_of_results_json(digits_run, capsys, no_telemetry):
    from mlflow import MlflowClient

    res, store = digits_run
    code, out, err = cli(capsys, "export", res.run_id, "--mlflow", "--out", str(store))
    assert code == 0, err
    uri = f"sqlite:///{store.resolve() / 'mlflow.db'}"  # the default: the store's own database
    assert uri in out and (store / "mlartifacts").is_dir()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ftaudit")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`ftaudit.run_id` = '{res.run_id}'")
    got = run.data.metrics
    results = json.loads((res.path / "results.json").read_text())
    expected = {}
    for att in results["attacks"]:
        for suffix, key in (("", "value"), (".lo", "lo"), (".hi", "hi")):
            expected[f"auc.{clean(att['name'])}{suffix}"] = att["auc"][key]
            for t in att["tpr_at_fpr"]:
                expected[f"tpr_at_fpr_{t['fpr']:g}.{clean(att['name'])}{suffix}"] = t[key]
    assert results["utility"], "the digits study reports utility"
    for u in results["utility"]:
        expected[f"utility.{clean(u['name'])}"] = u["value"]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=0), name
    assert run.data.params["finetune.epochs"] == "4" and run.data.params["study"] == "finetune-mia"
    assert json.loads(run.data.params["model.hidden"]) == [32]
    assert run.data.tags["ftaudit.study"] == "finetune-mia" and run.data.tags["ftaudit.version"] == results["ftaudit_version"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "results.json", "config.yaml", "arrays"} <= artifacts
    assert ("records.csv" in artifacts) == (res.path / "records.csv").is_file()
    assert {a.path for a in client.list_artifacts(run.info.run_id, "arrays")} == {
        f"arrays/{p.name}" for p in (res.path / "arrays").iterdir()}
    # a second export (the URI given explicitly) finds the first instead of logging the run twice
    code, out, _ = cli(capsys, "export", res.run_id, uri, "--mlflow", "--out", str(store))
    assert code == 0 and "already exported" in out
    assert len(client.search_runs([exp.experiment_id])) == 1
    from ftaudit.api import export_mlflow

    assert export_mlflow(res, out=store) == run.info.run_id  # the API, given the RunResult


def test_without_mlflow_one_line_says_how_to_install(digits_run, capsys, monkeypatch):
    res, store = digits_run
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    code, _, err = cli(capsys, "export", res.run_id, "--mlflow", "--out", str(store))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and 'pip install "ftaudit[mlflow]"' in lines[0], err


def test_export_needs_a_target_and_a_known_run(digits_run, capsys):
    res, store = digits_run
    code, _, err = cli(capsys, "export", res.run_id, "--out", str(store))
    assert code == 2 and err.startswith("error: export:")
    code, _, err = cli(capsys, "export", "no-such-run", "--mlflow", "--out", str(store))
    assert code == 2 and err.startswith("error: RUN:") and len(err.strip().splitlines()) == 1


def test_names_and_values_fit_mlflow_limits():
    assert clean("min-k++") == "min-kpp"
    assert clean("fine-tuned validation perplexity (full lr=0.01)") == "fine-tuned validation perplexity _full lr_0.01"
    params = params_of({"a": {"b": [1, 2], "c": None, "d": "x" * 7000}, "e": True})
    assert params["a.b"] == "[1, 2]" and params["a.c"] == "null" and params["e"] == "true"
    assert len(params["a.d"]) == 6000 and params["a.d"].endswith("config.yaml]")
    results = {"attacks": [{"name": "x", "auc": {"value": 0.5, "lo": None, "hi": 0.6}, "tpr_at_fpr": []}],
               "utility": [{"name": "acc", "value": 0.9}, {"name": "acc", "value": 0.8}]}
    assert metrics_of(results) == {"auc.x": 0.5, "auc.x.hi": 0.6, "utility.acc": 0.9, "utility.acc_2": 0.8}


def test_to_frame_is_the_metrics_table(digits_run, monkeypatch):
    res, _ = digits_run
    frame = res.to_frame()
    assert list(frame.index) == [a["name"] for a in res.results["attacks"]]
    for row, att in zip(res.metrics, res.results["attacks"]):
        assert frame.loc[row["attack"], "auc"] == row["auc"] == att["auc"]["value"]
        assert frame.loc[row["attack"], "tpr@0.01_hi"] == row["tpr@0.01_hi"]
        assert frame.loc[row["attack"], "n_members"] == att["n_members"]
    monkeypatch.setitem(sys.modules, "pandas", None)
    from ftaudit.errors import UserError

    with pytest.raises(UserError, match=r"ftaudit\[notebook\]"):
        res.to_frame()


def test_digits_model_is_exported_as_safetensors_with_its_config(digits_run, capsys, tmp_path):
    import torch
    from safetensors.torch import load_file

    from ftaudit.config_build import build_config
    from ftaudit.models.vision import build_model

    res, store = digits_run
    code, out, err = cli(capsys, "export-model", res.run_id, "finetune:2", str(tmp_path / "m"), "--out", str(store))
    assert code == 0, err
    assert "not a Hugging Face format" in out
    manifest = json.loads((tmp_path / "m" / "ftaudit-model.json").read_text())
    assert manifest["format"] == "safetensors" and manifest["model"] == "finetune:2"
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    from ftaudit.api import export_model

    again = export_model(res.path, "finetune:2", tmp_path / "m2")  # the API, given the run directory
    assert again["model_key"] == manifest["model_key"]
    assert load_file(str(tmp_path / "m2" / "model.safetensors")).keys() == state.keys()
    cfg = build_config("finetune-mia", res.path / "config.yaml", [])
    net = build_model(cfg.model, state["head.weight"].shape[0])
    net.load_state_dict(state, strict=True)  # the manifest's recipe rebuilds it
    x = torch.from_numpy(np.load(res.path / "arrays" / "audit_x.npy")[:5]).float()[:, None]
    assert net(x).shape == (5, state["head.weight"].shape[0])
