"""Choosing the executor, without a Ray cluster: a missing Ray is one user error naming the field,
and the device a Ray task runs is what the cluster has."""
import sys

import pytest

import ftaudit
from ftaudit.config import EngineConfig
from ftaudit.errors import UserError
from ftaudit.store.cache import ModelCache
from ftaudit.train.engine import Engine
from ftaudit.train.executor import LocalExecutor


def test_local_is_the_default_and_never_imports_ray(tmp_path):
    sys.modules.pop("ftaudit.train.ray_executor", None)
    engine = Engine(ModelCache(tmp_path), EngineConfig())
    assert isinstance(engine.executor, LocalExecutor)
    assert "ftaudit.train.ray_executor" not in sys.modules


def test_ray_chosen_but_not_installed_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UserError) as err:
        Engine(ModelCache(tmp_path), EngineConfig(executor="ray"))
    assert err.value.field == "engine.executor"
    assert 'pip install "ftaudit[ray]"' in err.value.fix


def test_a_run_without_ray_refuses_before_touching_the_store(tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError) as err:
        ftaudit.run("finetune-mia", overrides=["engine.executor=ray"], out=str(store))
    assert err.value.field == "engine.executor"
    assert not store.exists()


@pytest.mark.parametrize("address,problem", [("127.0.0.1:1", "nothing answers"), ("ray://nowhere", "not host:port")])
def test_a_cluster_address_nothing_answers_on_is_refused_at_once(address, problem, tmp_path):
    """In a second, before the store is touched — not after Ray's minutes of reconnecting."""
    pytest.importorskip("ray")
    store = tmp_path / "store"
    with pytest.raises(UserError) as err:
        ftaudit.run("finetune-mia", overrides=["engine.executor=ray", f"engine.ray_address={address}"], out=str(store))
    assert err.value.field == "engine.ray_address" and problem in err.value.problem
    assert not store.exists()


def test_task_device_follows_the_cluster():
    from ftaudit.train.ray_executor import task_device  # imports Ray only when it runs

    assert task_device("auto", 0) == "cpu"
    assert task_device("auto", 8) == "cuda"
    assert task_device("cuda:3", 8) == "cuda"  # a task sees only its own GPU, as device 0
    assert task_device("cpu", 8) == "cpu"
    for device, gpus in [("cuda", 0), ("mps", 0)]:
        with pytest.raises(UserError) as err:
            task_device(device, gpus)
        assert err.value.field == "engine.device"
