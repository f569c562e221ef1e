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


def test_digits_split_disjoint_and_relabelled():
    task = load_digits_task(DataConfig(), seed=0)
    sets = [set(s.source_index) for s in (task.pretrain, task.pretrain_test, task.audit, task.population)]
    assert sum(len(s) for s in sets) == len(set().union(*sets))
    assert len(task.audit) == 500 and len(task.population) == 300
    assert task.audit.y.min() == 0 and task.audit.y.max() == 4
    assert task.audit.x.shape[1:] == (1, 8, 8) and task.audit.x.max() <= 1.0


def test_digits_too_large_is_a_user_error():
    with pytest.raises(UserError) as info:
        load_digits_task(DataConfig(audit_size=900, population_size=100), seed=0)
    assert info.value.field == "data.audit_size"


def test_shifts_move_pixels_and_keep_original_first():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1
    assert shift_images(x, 0, 1)[0, 0, 1, 2] == 1
    assert shift_images(x, -1, 0)[0, 0, 0, 1] == 1
    views = query_views(x, 1)
    assert views.shape[0] == 5 and torch.equal(views[0], x)
    assert all(v.sum() == 1 for v in views)
