"""engine.device / engine.dtype: cache-key semantics, a missing device as a user error, and an explicit
``cpu`` that is the very same as ``auto`` on a machine without an accelerator."""
import pytest
import torch

from ftaudit.cli import main
from ftaudit.config import EngineConfig
from ftaudit.devices import Placement, resolve_device
from ftaudit.errors import UserError
from ftaudit.store.cache import ModelCache
from ftaudit.train.engine import Engine, TrainGroup
from tiny_groups import tiny_mlp_group

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_placement_keys_are_empty_only_on_cpu_float32():
    assert Placement().key() == {} and Placement().query_key() == {}
    assert Placement(dtype=torch.bfloat16).key() == {"dtype": "bfloat16"}
    assert Placement(dtype=torch.bfloat16).query_key() == {}  # queries run in float32 whatever engine.dtype
    cuda = Placement(torch.device("cuda:1"), torch.bfloat16)  # built, not resolved: no CUDA needed
    assert cuda.key() == {"device": "cuda", "dtype": "bfloat16"}  # the type, not the index
    assert cuda.query_key() == {"device": "cuda"}
    assert Placement(torch.device("cuda:0")).key() == Placement(torch.device("cuda:1")).key()


@no_cuda
def test_cuda_without_cuda_is_a_user_error_naming_the_field():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError) as info:
        resolve_device("cuda")
    assert info.value.field == "engine.device"


@no_cuda
def test_cli_with_cuda_on_a_machine_without_exits_2_with_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["run", "--set", "engine.device=cuda", "--out", str(tmp_path / "store")])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert info.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: engine.device:") and "Traceback" not in err


def _group() -> TrainGroup:
    return tiny_mlp_group(48, epochs=2)


@no_cuda
def test_explicit_cpu_gives_the_keys_and_bit_identical_models_of_auto(tmp_path):
    group = _group()
    auto = Engine(ModelCache(tmp_path / "auto"), EngineConfig(device="auto")).train(group)
    cpu = Engine(ModelCache(tmp_path / "cpu"), EngineConfig(device="cpu")).train(group)
    assert auto.keys == cpu.keys and auto.trained == cpu.trained == 4
    for a, b in zip(auto.states(), cpu.states()):
        assert all(torch.equal(a[n], b[n]) for n in a)
    # and the keys are those of a run from before devices existed: the same cache serves both
    assert Engine(ModelCache(tmp_path / "auto"), EngineConfig(device="cpu")).train(group).loaded == 4
