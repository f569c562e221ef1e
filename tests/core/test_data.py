import numpy as np
import pytest
import torch

from ftaudit.config import DataConfig
from ftaudit.data.augment import query_views, shift_images
from ftaudit.data.digits import load_digits_task
from ftaudit.data.keep import half_keep_matrix
from ftaudit.errors import UserError


def test_keep_matrix_exact_half_and_random():
    keep = half_keep_matrix(18, 500, seed=1)
    assert keep.shape == (18, 500) and keep.dtype == bool
    assert (keep.sum(0) == 9).all()
    assert not np.array_equal(keep[0], keep[1])
    assert np.array_equal(keep, half_keep_matrix(18, 500, seed=1))
    with pytest.raises(ValueError):
        half_keep_matrix(5, 10, 0)


def _disjoint(*splits):
    sets = [set(s.source_index) for s in splits]
    return sum(len(s) for s in sets) == len(set().union(*sets))


def test_digits_half_split_is_disjoint_same_task():
    task = load_digits_task(DataConfig(), seed=0)
    assert _disjoint(task.pretrain, task.audit, task.population)
    assert (len(task.pretrain), len(task.audit), len(task.population)) == (300, 500, 400)
    assert not task.new_head and task.pretrain_test is task.population
    assert set(task.audit.y) == set(range(10))
    assert task.audit.x.shape[1:] == (1, 8, 8) and task.audit.x.max() <= 1.0


def test_digits_class_split_relabels_and_needs_a_new_head():
    task = load_digits_task(DataConfig(split="classes", population_size=300), seed=0)
    assert _disjoint(task.pretrain, task.pretrain_test, task.audit, task.population)
    assert task.new_head
    assert set(task.audit.y) == set(range(5)) and set(task.pretrain.y) == set(range(5))
    assert set(np.array(task.finetune_classes)[task.audit.y]) == {5, 6, 7, 8, 9}


def test_digits_too_large_is_a_user_error():
    with pytest.raises(UserError) as info:
        load_digits_task(DataConfig(split="classes", audit_size=900, population_size=100), seed=0)
    assert info.value.field == "data.audit_size"
    with pytest.raises(UserError) as info:
        load_digits_task(DataConfig(pretrain_size=1500), seed=0)
    assert info.value.field == "data.pretrain_size"


def test_shifts_move_pixels_and_keep_original_first():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1
    assert shift_images(x, 0, 1)[0, 0, 1, 2] == 1
    assert shift_images(x, -1, 0)[0, 0, 0, 1] == 1
    views = query_views(x, 1)
    assert views.shape[0] == 5 and torch.equal(views[0], x)
    assert all(v.sum() == 1 for v in views)
