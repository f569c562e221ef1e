"""The TMI scenarios' parts: query views, mislabelling, per-position text features, cached
per-victim scoring, and config errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ftaudit.attacks.tmi import clip_rows, shifted_logits_world, text_features, tmi_attacks, victim_scores
from ftaudit.config_build import build_config
from ftaudit.errors import UserError
from ftaudit.store.runs import Store
from ftaudit.studies.base import Context
from ftaudit.studies.tmi.digits import mislabel, query_views
from ftaudit.studies.tmi.scoring import DESCRIPTIONS, Outputs, Scorer, meta_config
from ftaudit.studies.tmi.text_world import token_phi, token_summary, token_views
from ftaudit.train.engine import Engine


# ------------------------------------------------------------------------------ query views


def test_image_views_keep_the_original_first_and_stay_in_pixel_range():
    x = torch.rand(30, 1, 8, 8)
    v = query_views(x, 5, max_shift=1, noise=0.1, seed=3)
    assert v.shape == (5, 30, 1, 8, 8)
    assert torch.equal(v[0], x)
    assert (v >= 0).all() and (v <= 1).all()
    assert not torch.equal(v[1], v[2])
    assert torch.equal(v, query_views(x, 5, 1, 0.1, seed=3))  # seeded
    assert not torch.equal(v, query_views(x, 5, 1, 0.1, seed=4))
    # no shift and no noise: every view is the original
    assert torch.equal(query_views(x, 4, 0, 0.0, seed=0), x.expand(4, *x.shape))


def test_image_views_shift_each_image_by_at_most_the_given_pixels():
    x = torch.zeros(200, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0  # one lit pixel: its position after the view is the shift
    v = query_views(x, 3, max_shift=1, noise=0.0, seed=0)
    pos = v[1:, :, 0].reshape(2, 200, 64).argmax(-1)
    dy, dx = pos // 8 - 4, pos % 8 - 4
    assert dy.abs().max() <= 1 and dx.abs().max() <= 1
    assert len({(int(a), int(b)) for a, b in zip(dy.flatten(), dx.flatten())}) == 9  # every offset occurs


def test_mislabel_changes_exactly_the_share_to_another_class():
    y = np.random.default_rng(0).integers(0, 5, size=400)
    out, mask = mislabel(y, 0.25, 5, seed=1)
    assert mask.sum() == 100
    assert (out[mask] != y[mask]).all() and (out[~mask] == y[~mask]).all()
    assert out.min() >= 0 and out.max() < 5
    assert len(np.unique(out[mask] - y[mask])) > 1  # not one fixed offset
    none, mask0 = mislabel(y, 0.0, 5, seed=1)
    assert not mask0.any() and (none == y).all()


def test_token_views_replace_the_given_share_with_pool_tokens():
    ids = torch.randint(10, 20, (50, 16))
    v = token_views(ids, 4, share=0.25, seed=0)
    assert v.shape == (4, 50, 16) and torch.equal(v[0], ids)
    changed = (v[1:] != ids).sum(-1)
    assert changed.max() <= 4 and changed.float().mean() > 2  # 4 positions drawn, some redrawn equal
    assert set(v.unique().tolist()) <= set(ids.unique().tolist())
    assert torch.equal(token_views(ids, 3, 0.0, seed=0), ids.expand(3, 50, 16))


def test_token_phi_is_the_logit_scaled_next_token_probability():
    from ftaudit.models.lm import initial_state, tiny_gpt2

    model = tiny_gpt2(40, 12, n_layer=1, n_embd=16, n_head=2, seed=0)
    states = [initial_state(model), initial_state(tiny_gpt2(40, 12, n_layer=1, n_embd=16, n_head=2, seed=1))]
    ids = torch.randint(0, 40, (5, 12))
    phi = token_phi(model, states, ids, chunk=2)
    assert phi.shape == (2, 5, 11) and phi.dtype == np.float64
    model.load_state_dict(states[1])
    with torch.no_grad():
        p = torch.softmax(model(ids).double(), -1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    np.testing.assert_allclose(phi[1], (p.log() - torch.log1p(-p)).numpy(), rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------------- cached scoring


def test_attack_cell_equals_the_attacks_and_reuses_cached_victims(tmp_path, monkeypatch):
    cfg = build_config("tmi", overrides=["tmi.meta_epochs=2", "tmi.meta_hidden=8"])
    store = Store(tmp_path)
    ctx = Context(store=store, engine=Engine(store.models, cfg.engine))
    logits, keep = shifted_logits_world(8, 30, 3, 4, effect=2.0, seed=0)
    direct = tmi_attacks(logits, keep, [0, 2, 5], meta_config(cfg), cfg.tmi.balance)
    scorer = Scorer(ctx, cfg, DESCRIPTIONS)
    attack_cell = lambda out, keep, victims: scorer.request(out, keep, victims).scores()  # noqa: E731
    cell = attack_cell(Outputs(logits), keep, [0, 2, 5])
    for name, s in direct.scores.items():
        np.testing.assert_allclose(cell.scores[name], s)
    for field in ("labels", "example", "target"):
        np.testing.assert_array_equal(getattr(cell, field), getattr(direct, field))
    other = attack_cell(Outputs(logits[:, :, :2]), keep, [0])  # fewer queries: a new cell
    assert not np.allclose(other.scores["tmi"], direct.scores["tmi"][:30])

    def no_training(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr("ftaudit.attacks.tmi.victim_scores", no_training)
    cached = attack_cell(Outputs(logits), keep, [5, 0])  # victims already scored
    s = direct.scores["tmi"]
    np.testing.assert_allclose(cached.scores["tmi"], np.concatenate([s[60:], s[:30]]))
    np.testing.assert_array_equal(cached.labels, keep[[5, 0]].reshape(-1))
    with pytest.raises(AssertionError, match="scored again"):
        attack_cell(Outputs(logits), keep, [1])


def test_token_summary_is_mean_min_k_and_median():
    phi = np.random.default_rng(3).normal(size=(2, 3, 4, 10))
    s = token_summary(phi)
    assert s.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(s[..., 0], phi.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(s[..., 1], np.sort(phi, -1)[..., :2].mean(-1), rtol=1e-6)
    np.testing.assert_allclose(s[..., 2], np.median(phi, -1), rtol=1e-6)


def test_text_outputs_feed_tmi_the_summary_and_the_baselines_its_mean():
    phi, keep = shifted_logits_world(6, 20, 2, 3, effect=1.0, seed=1)
    meta = meta_config(build_config("tmi-text", overrides=["tmi.meta_epochs=2"]))
    text = victim_scores(phi, "token-summary", keep, 1, meta, True)
    mean = phi.astype(np.float64)[..., 0]  # [M, P, A]
    np.testing.assert_allclose(text["global-threshold"], mean[1].mean(-1))
    from ftaudit.attacks.tmi import tmi_scores

    np.testing.assert_allclose(text["tmi"], tmi_scores(text_features(phi), keep, [1], meta).scores["tmi"])


def test_text_features_keep_the_length_of_all_but_the_longest_vectors():
    phi = np.random.default_rng(2).normal(scale=5.0, size=(4, 50, 3, 31))
    f = text_features(phi)
    norm, fnorm = np.linalg.norm(phi, axis=-1), np.linalg.norm(f, axis=-1)
    assert np.isclose(fnorm.max(), 1.0) and (fnorm < 1 - 1e-6).mean() > 0.98  # only the top 1 % clipped
    kept = fnorm < 1 - 1e-6
    np.testing.assert_allclose(fnorm[kept] / norm[kept], (fnorm[kept] / norm[kept])[0], rtol=1e-5)  # one scale
    assert (clip_rows(phi) > 0).sum() == (f > 0).sum()  # directions unchanged


# ---------------------------------------------------------------------------------- config


@pytest.mark.parametrize("study, override, field", [
    ("tmi", "tmi.shadows=7", "tmi.shadows"),
    ("tmi", "tmi.shadows=2", "tmi.shadows"),
    ("tmi", "tmi.shadow_counts=[8, 64]", "tmi.shadow_counts[1]"),
    ("tmi", "tmi.augmentation_counts=[16]", "tmi.augmentation_counts[0]"),
    ("tmi", "tmi.method=nope", "tmi.method"),
    ("tmi", "tmi.methods=[head, nope]", "tmi.methods[1]"),
    ("tmi", "tmi.lrs={head: 0.01}", "tmi.lrs"),  # the default sweep's lora and full have no lr
    ("tmi", "tmi.epsilons=[.inf]", "tmi.epsilons[0]"),
    ("tmi", "tmi.epsilons=[-1]", "tmi.epsilons[0]"),
    ("tmi", "tmi.mislabel=1.0", "tmi.mislabel"),
    ("tmi", "tmi.victims=40", "tmi.victims"),
    ("tmi", "data.finetune_classes=[4, 5]", "data.finetune_classes"),  # overlaps the pretraining classes
    ("tmi-text", "tmi.n_head=3", "tmi.n_head"),
    ("tmi-text", "tmi.shadow_counts=[32]", "tmi.shadow_counts[0]"),
])
def test_bad_tmi_values_are_user_errors(study, override, field):
    with pytest.raises(UserError) as info:
        build_config(study, overrides=[override])
    assert info.value.field == field


@pytest.mark.parametrize("study, override, field", [("tmi", "finetune.method=lora", "finetune.method"),
                                                     ("tmi", "model.arch=cnn", "model.arch"),
                                                     ("tmi", "pretrain.epochs=3", "pretrain.epochs"),
                                                     ("tmi", "data.split=half", "data.split"),
                                                     ("tmi", "finetune.references=4", "finetune.references"),
                                                     ("tmi-text", "finetune.batch_size=4", "finetune.batch_size"),
                                                     ("tmi-text", "model.hidden=[8]", "model")])
def test_keys_tmi_does_not_read_are_not_in_its_schema(study, override, field):
    with pytest.raises(UserError) as info:
        build_config(study, overrides=[override])
    assert info.value.field == field and info.value.problem == "unknown key"


def test_study_configs_hold_only_their_own_sections_and_round_trip():
    from ftaudit.studies.tmi.config import TMIStudyConfig, TMITextStudyConfig

    sections = {"study", "seed", "seeds", "out", "preset", "engine", "metrics"}
    assert set(TMIStudyConfig.model_fields) == sections | {"data", "model", "pretrain", "finetune", "tmi"}
    assert set(TMITextStudyConfig.model_fields) == sections | {"finetune", "tmi"}
    for study, cls in (("tmi", TMIStudyConfig), ("tmi-text", TMITextStudyConfig)):
        cfg = build_config(study, overrides=["tmi.shadows=8", "tmi.shadow_counts=[4]", "finetune.dp.epsilon=2"])
        assert isinstance(cfg, cls)
        assert cls.model_validate(cfg.model_dump(mode="json")) == cfg


def test_studies_run_on_one_thread_unless_engine_threads_is_set():
    from ftaudit.studies.tmi.scoring import study_threads

    torch.set_num_threads(2)
    with study_threads(build_config("tmi")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with study_threads(build_config("tmi", overrides=["engine.threads=2"])):
        assert torch.get_num_threads() == 2
