import pytest

from ftaudit.config_input import parse_override
from ftaudit.config_build import build_config, config_keys
from ftaudit.studies.digits.config import FinetuneMIAConfig
from ftaudit.errors import UserError


def test_defaults_validate_and_models_even():
    cfg = build_config()
    assert cfg.study == "finetune-mia" and isinstance(cfg, FinetuneMIAConfig)
    assert cfg.finetune.n_models % 2 == 0 and cfg.finetune.n_models >= cfg.finetune.references + 1


def test_file_then_set_then_kwargs(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("finetune:\n  epochs: 7\n  lr: 0.01\nseed: 3\n")
    cfg = build_config(None, f, ["finetune.epochs=9"], seed=5)
    assert (cfg.finetune.epochs, cfg.finetune.lr, cfg.seed) == (9, 0.01, 5)


def test_bare_kwarg_prefers_finetune():
    assert build_config(epochs=11).finetune.epochs == 11
    assert build_config(pretrain__epochs=2).pretrain.epochs == 2


@pytest.mark.parametrize("override, field", [
    (["finetune.epochz=3"], "finetune.epochz"),
    (["finetune.epochs=abc"], "finetune.epochs"),
    (["finetune.references=-1"], "finetune.references"),
    (["model.arch=vit"], "model.arch"),
    (["nosuchsection.key=1"], "nosuchsection"),
    (["finetune.epochs"], "--set"),
    (["=3"], "--set"),
    (["data.audit_size=0"], "data.audit_size"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(UserError) as info:
        build_config(None, None, override)
    assert info.value.field == field
    assert info.value.fix


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_config(None, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        build_config(None, bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(UserError, match="mapping"):
        build_config(None, scalar)


def test_override_values_are_yaml():
    assert parse_override("attack.names=[loss, lira-online]") == (["attack", "names"], ["loss", "lira-online"])
    assert build_config(None, None, ["finetune.lr=1e-2"]).finetune.lr == 0.01  # YAML 1.1 reads 1e-2 as text


def test_config_keys_cover_every_leaf():
    keys = {k for k, _, _ in config_keys()}
    assert {"finetune.epochs", "attack.shifts", "metrics.bootstrap", "engine.vectorized"} <= keys
    assert all("." in k or k in FinetuneMIAConfig.model_fields for k in keys)


def test_each_study_has_its_own_schema():
    """A key a study does not read is not in its schema: an error, never silently ignored."""
    with pytest.raises(UserError) as info:
        build_config("finetune-mia", None, ["sweep.lrs=[0.1]"])
    assert info.value.field == "sweep"
    assert build_config("methods", None, ["sweep.lrs=[0.1]"]).sweep.lrs == [0.1]
    with pytest.raises(UserError) as info:
        build_config("dp-finetune", None, ["finetune.lr=0.1"])  # the DP study searches its learning rates
    assert info.value.field == "finetune.lr"


def test_study_from_file_and_argument(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("study: methods\nsweep: {lrs: [0.01]}\n")
    assert build_config(None, f).study == "methods"
    with pytest.raises(UserError) as info:
        build_config("nope")
    assert info.value.field == "study"


def test_cross_field_errors_name_the_field():
    with pytest.raises(UserError) as info:
        build_config("methods", None, ["attack.names=[loss]"])
    assert info.value.field == "sweep.attack"
    with pytest.raises(UserError) as info:
        build_config(None, None, ["attack.targets=99"])
    assert info.value.field == "attack.targets"
