import numpy as np
import torch
import torch.nn.functional as F

from ftaudit.config import EngineConfig, ModelConfig, OptimConfig
from ftaudit.finetune.methods import get_method
from ftaudit.models.vision import build_model
from ftaudit.store.cache import ModelCache
from ftaudit.train.engine import Engine, Job, TrainGroup
from ftaudit.train.objectives import classification_loss, get_objective, soft_cross_entropy


def test_soft_cross_entropy_matches_torch_and_classification_on_one_hot():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    probs = torch.softmax(torch.randn(3, 5, 7, generator=g), -1)
    expected = F.cross_entropy(logits.reshape(-1, 7), probs.reshape(-1, 7), reduction="none").reshape(3, 5)
    torch.testing.assert_close(soft_cross_entropy(logits, probs), expected)
    labels = torch.randint(0, 7, (3, 5), generator=g)
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(labels, 7).float()), classification_loss(logits, labels))
    assert get_objective("distillation").loss is soft_cross_entropy and get_objective("distillation").n_views(2) == 1


def _mlp(seed):
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch="mlp", hidden=[32]), 4)


def test_engine_distillation_on_soft_labels_agrees_with_the_teacher(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 1, 8, 8, generator=g)
    teacher = _mlp(1)
    with torch.no_grad():
        teacher.head.weight.mul_(10)  # a confident, non-trivial teacher
        probs = torch.softmax(teacher(x), -1)
    assert probs.argmax(-1).bincount(minlength=4).min() > 0
    student = _mlp(2)
    init = {k: v.clone() for k, v in student.state_dict().items()}
    trainable = get_method("full").trainable(student)
    train, test = np.arange(384), torch.arange(384, 512)
    group = TrainGroup(name="distil", template=student, arch={"a": "mlp"}, method="full", trainable=trainable,
                       optim=OptimConfig(lr=0.01, epochs=15, batch_size=32), x=x, y=probs, data_digest="0123abcd",
                       jobs=[Job(init=init, rows=train, seed=0)], objective="distillation")
    (state,) = Engine(ModelCache(tmp_path), EngineConfig()).train(group).states()

    def agreement(sd):
        student.load_state_dict(sd)
        with torch.no_grad():
            return (student(x[test]).argmax(-1) == probs[test].argmax(-1)).float().mean().item()

    before, after = agreement(init), agreement(state)
    assert after > 0.5 and after > before + 0.15, (before, after)  # 4 classes: chance is 0.25
