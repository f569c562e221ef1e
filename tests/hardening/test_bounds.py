"""Bounds on every numeric field of every study, and the cost estimate checked before training."""
from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from ftaudit import budget
from ftaudit.config_build import build_config, config_keys
from ftaudit.errors import UserError
from ftaudit.studies import get_study, names

from study_settings import SMALL

STUDIES = names()
INF_ALLOWED = {"finetune.dp.epsilon", "sweep.headline_epsilon"}  # .inf means "no DP" there


def numeric_leaves(model: type[BaseModel], prefix: str = ""):
    """(dotted key, kind) of every int / float / list-of-int / list-of-float leaf of a config class."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from numeric_leaves(ann, f"{prefix}{name}.")
            continue
        if typing.get_origin(ann) in (typing.Union, types.UnionType):  # X | None
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        base = ann
        if typing.get_origin(base) is typing.Annotated:
            base = typing.get_args(base)[0]
        if base is bool:
            continue
        if base in (int, float):
            yield prefix + name, base.__name__
        elif typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            if typing.get_origin(item) is typing.Annotated:
                item = typing.get_args(item)[0]
            if item in (int, float):
                yield prefix + name, f"list[{item.__name__}]"


@pytest.mark.parametrize("study", STUDIES)
def test_every_number_is_bounded(study):
    """A huge value, infinity or NaN in any numeric field is refused, naming that field."""
    leaves = list(numeric_leaves(get_study(study).Config))
    assert len(leaves) >= 8
    for key, kind in leaves:
        if key == "seed":
            bad = ["18446744073709551616"]  # 2**64
        elif kind == "int":
            bad = ["1000000000000", "1.5", "true"]
        elif kind == "float":
            bad = ["1.0e300", ".nan", "true"] + ([] if key in INF_ALLOWED else [".inf"])
        elif kind == "list[int]":
            bad = ["[18446744073709551616]" if key == "seeds" else "[1000000000000]", "[true]"]
        else:
            bad = ["[1.0e300]", "[.nan]"]
        for value in bad:
            with pytest.raises(UserError) as info:
                build_config(study, None, [f"{key}={value}"])
            assert info.value.field.split("[")[0] == key, (key, value, info.value.one_line())


@pytest.mark.parametrize("study", STUDIES)
def test_defaults_and_small_settings_fit_the_budget(study):
    for overrides in ([], SMALL[study]):
        cfg = build_config(study, None, overrides)
        costs = budget.check_budget(cfg)
        if study == "audit":
            assert costs == []  # the user's own model: its size is known only once loaded
            continue
        assert costs and all(c.flops < budget.MAX_FLOPS / 100 and c.bytes < budget.MAX_BYTES / 10 for c in costs)
        keys = {k for k, _, _ in config_keys(study)}
        for cost in costs:  # every field an estimate names is a real key of that study
            assert cost.fields and set(cost.fields) <= keys, (cost.what, set(cost.fields) - keys)


def test_estimates_grow_with_the_fields_they_name():
    small = budget.check_budget(build_config("finetune-mia", None, SMALL["finetune-mia"]))
    more = budget.check_budget(build_config("finetune-mia", None, SMALL["finetune-mia"] + ["finetune.epochs=40"]))
    train = {c.what: c for c in small}["fine-tuning"].flops
    assert {c.what: c for c in more}["fine-tuning"].flops == pytest.approx(10 * train)
    mlp = budget.mlp_size([32])
    assert mlp == (64 * 32 + 32 + 32 * 10 + 10,) * 2


@pytest.mark.parametrize("study, overrides, field, words", [
    ("finetune-mia", ["model.arch=mlp", "model.hidden=[8192, 8192]", "finetune.references=4000",
                      "finetune.epochs=10000"], "finetune.references", "floating-point operations"),
    ("finetune-mia", ["model.arch=cnn", "model.channels=[4096, 4096]", "pretrain.epochs=10000"], "pretrain.epochs",
     "floating-point operations"),
    ("dp-finetune", ["model.arch=mlp", "model.hidden=[8192]", "finetune.batch_size=4096", "engine.chunk=64",
                     "finetune.references=64", "finetune.epochs=1", "pretrain.epochs=1", "data.audit_size=100"],
     "engine.chunk", "GiB"),
    ("methods", ["metrics.bootstrap=100000", "finetune.references=4000", "data.audit_size=1400", "finetune.epochs=1",
                 "model.arch=mlp", "model.hidden=[8]", "sweep.methods=[head]", "sweep.lrs=[0.001]"],
     "metrics.bootstrap", "resample"),
    ("lm-mia", ["lm.n_embd=8192", "lm.n_layer=64", "lm.n_head=64"], "lm.pretrain_blocks", "floating-point operations"),
    ("forgetting", ["forgetting.models=4096", "forgetting.checkpoints=[0, 1000000]", "forgetting.arch=cnn",
                    "forgetting.channels=[512, 512]"], "forgetting.models", "floating-point operations"),
    ("tmi", ["tmi.shadows=4096", "tmi.pretrain_epochs=10000", "tmi.arch=cnn", "model.channels=[1024, 1024]"],
     "tmi.shadows", "floating-point operations"),
    ("stealing", ["stealing.candidates=['64x8192:wikitext2:0','1x16:wikitext2:1']"], "stealing.candidates",
     "floating-point operations"),
])
def test_over_budget_runs_are_refused_before_any_work(tmp_path, study, overrides, field, words):
    """Every field within its bounds, together beyond any machine: refused by the pipeline's first
    step, naming the field, with nothing written."""
    from ftaudit.pipeline import run_pipeline

    cfg = build_config(study, None, overrides + [f"out={tmp_path / 'store'}"])
    with pytest.raises(UserError) as info:
        run_pipeline(cfg)
    assert info.value.field == field and words in info.value.problem, info.value.one_line()
    assert "lower " in info.value.fix
    assert not (tmp_path / "store").exists()


def test_seed_bounds_and_the_largest_seed_are_accepted():
    assert build_config("finetune-mia", None, [f"seed={2**63 - 1}"]).seed == 2**63 - 1
    for bad in (f"seed={2**63}", "seed=-1", "seeds=[-1]", f"seeds=[{2**63}]"):
        with pytest.raises(UserError):
            build_config("finetune-mia", None, [bad])


def test_strict_types_and_scientific_notation():
    cfg = build_config("finetune-mia", None, ["finetune.lr=1e-2", "pretrain.lr=3E-3"])
    assert cfg.finetune.lr == 0.01 and cfg.pretrain.lr == 0.003  # YAML 1.1 would read "1e-2" as text
    for bad, field in [("finetune.epochs=1e3", "finetune.epochs"), ("finetune.epochs='3'", "finetune.epochs"),
                       ("attack.params={rmia-online: {gamma: true}}", "attack.params.rmia-online.gamma"),
                       ("engine.vectorized=1", "engine.vectorized")]:
        with pytest.raises(UserError) as info:
            build_config("finetune-mia", None, [bad])
        assert info.value.field == field


def test_api_values_are_taken_as_yaml_would_give_them():
    import numpy as np

    cfg = build_config("finetune-mia", None, None, epochs=np.int64(7), finetune__lr=np.float32(0.5), seeds=(1, 2),
                       out=Path("some") / "store")
    assert (cfg.finetune.epochs, cfg.finetune.lr, cfg.seeds, cfg.out) == (7, 0.5, [1, 2], str(Path("some/store")))
    with pytest.raises(UserError) as info:
        build_config("finetune-mia", None, None, epochs=np.bool_(True))
    assert info.value.field == "finetune.epochs"
