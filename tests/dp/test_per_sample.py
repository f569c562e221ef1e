import copy

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from ftaudit.config import ModelConfig
from ftaudit.dp.per_sample import DPParams, clipped_sum, dp_gradient, expected_batch_size, per_sample_grads
from ftaudit.models.vision import build_model
from ftaudit.train.objectives import classification_loss

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook")


def _model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch=arch, hidden=[16], channels=[4, 8]), 3)


def _batch(n: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _opacus_grad(model, trainable, x, y, clip, sigma, ebs, seed):
    """What Opacus leaves in .grad before the optimizer's own step: clip, noise, scale."""
    module = copy.deepcopy(model)
    for name, p in module.named_parameters():
        p.requires_grad_(name in trainable)
    by_name = dict(module.named_parameters())
    gsm = GradSampleModule(module, loss_reduction="mean")
    opt = DPOptimizer(torch.optim.SGD([by_name[n] for n in trainable], lr=0.0), noise_multiplier=sigma,
                      max_grad_norm=clip, expected_batch_size=ebs, generator=torch.Generator().manual_seed(seed))
    classification_loss(gsm(x), y).mean().backward()
    opt.pre_step()
    return {n: by_name[n].grad.clone() for n in trainable}, {n: by_name[n].summed_grad.clone() for n in trainable}


def _ours(model, trainable, x, y, mask, dp):
    state = dict(model.named_parameters())
    params = {n: state[n].detach().unsqueeze(0) for n in trainable}
    frozen = {n: t.detach() for n, t in state.items() if n not in trainable}
    return dp_gradient(model, classification_loss, params, frozen, x.unsqueeze(0), y.unsqueeze(0),
                       mask.unsqueeze(0), dp, dp.generators())


@pytest.mark.parametrize("arch,head_only", [("mlp", False), ("mlp", True), ("cnn", False), ("cnn", True)])
def test_clipped_sum_equals_opacus(arch, head_only):
    model = _model(arch)
    trainable = [n for n, _ in model.named_parameters() if n.startswith("head.") or not head_only]
    x, y = _batch()
    state = dict(model.named_parameters())
    params = {n: state[n].detach().unsqueeze(0) for n in trainable}
    frozen = {n: t.detach() for n, t in state.items() if n not in trainable}
    grads = per_sample_grads(model, classification_loss, params, frozen, x.unsqueeze(0), y.unsqueeze(0))
    norms = torch.cat([g.flatten(2) for g in grads.values()], -1).norm(dim=-1)[0]
    clip = float(norms.median())  # half the rows get clipped, half do not
    assert (norms > clip * 1.01).any() and (norms < clip * 0.99).any()
    _, summed = _opacus_grad(model, trainable, x, y, clip, 0.0, 1, 0)
    ours = clipped_sum(grads, torch.ones(1, len(x)), clip)
    for n in trainable:
        torch.testing.assert_close(ours[n][0], summed[n], atol=1e-5, rtol=1e-5)
    # padding rows contribute nothing: mask out the last 3 rows == Opacus on the first 7
    _, summed7 = _opacus_grad(model, trainable, x[:7], y[:7], clip, 0.0, 1, 0)
    masked = clipped_sum(grads, (torch.arange(len(x)) < 7).float().unsqueeze(0), clip)
    for n in trainable:
        torch.testing.assert_close(masked[n][0], summed7[n], atol=1e-5, rtol=1e-5)


def test_noisy_gradient_is_opacus_draw_for_draw():
    model = _model("mlp")
    trainable = [n for n, _ in model.named_parameters()]
    x, y = _batch(8)
    dp = DPParams(noise_multiplier=1.3, max_grad_norm=0.7, expected_batch_size=(6,), noise_seeds=(42,))
    theirs, _ = _opacus_grad(model, trainable, x, y, 0.7, 1.3, 6, 42)
    ours = _ours(model, trainable, x, y, torch.ones(8), dp)
    for n in trainable:
        torch.testing.assert_close(ours[n][0], theirs[n], atol=1e-6, rtol=1e-5)


def test_noise_std_is_sigma_clip_over_expected_batch_size():
    model = _model("mlp")
    trainable = [n for n, _ in model.named_parameters()]
    x, y = _batch(4)
    sigma, clip, ebs = 2.0, 0.5, 5
    dp = DPParams(sigma, clip, (ebs, ebs), (1, 2))
    state = dict(model.named_parameters())
    params = {n: torch.stack([state[n].detach()] * 2) for n in trainable}
    out = dp_gradient(model, classification_loss, params, {}, torch.stack([x, x]), torch.stack([y, y]),
                      torch.zeros(2, 4), dp, dp.generators())  # empty batch: the gradient is pure noise
    noise = torch.cat([g.flatten(1) for g in out.values()], 1)  # [2, P], P ≈ 1.1k
    expected = sigma * clip / ebs
    assert noise.mean().abs() < 4 * expected / noise.numel() ** 0.5
    assert noise.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(torch.corrcoef(noise)[0, 1]) < 0.1  # each model draws from its own generator
    # σ = 0: no noise at all, the clipped mean only
    quiet = DPParams(0.0, clip, (ebs, ebs), (1, 2))
    zero = dp_gradient(model, classification_loss, params, {}, torch.stack([x, x]), torch.stack([y, y]),
                       torch.zeros(2, 4), quiet, quiet.generators())
    assert all(torch.count_nonzero(g) == 0 for g in zero.values())


def test_expected_batch_size_and_params():
    assert expected_batch_size(500, 0.05) == 25
    assert expected_batch_size(100, 0.29) == 29  # opacus's bare int(100 * 0.29) gives 28
    assert expected_batch_size(510, 1 / 21) == 24  # int(n·q), as PrivacyEngine.make_private
    with pytest.raises(ValueError, match="below 1"):
        expected_batch_size(10, 0.05)
    dp = DPParams.for_rows(1.0, 1.0, 0.1, [range(50), range(80)], [5, 6])
    assert dp.expected_batch_size == (5, 8) and dp.select([1]).noise_seeds == (6,)
    with pytest.raises(ValueError, match="one expected batch size"):
        DPParams(1.0, 1.0, (5.0,), (1, 2))
