"""Which public base was a black-box classifier fine-tuned from? Read it off its answers.

Fine-tuning moves an encoder little, so the victim's answers stay (close to) a simple function of its
base's features. For each candidate base the attacker computes features of the queried texts (the
encoder's last hidden state: the [CLS] position and the mean over real tokens, standardised), fits a
linear softmax probe from those features to the victim's answers, and scores the fit on queries it
was not fitted on (two-fold cross-fitting, so a wider candidate cannot win by over-fitting):

* probabilities: the mean log-likelihood of the victim's distributions under the probe,
  −CE(victim, probe) (higher = better fit);
* top-1 labels: the mean log-probability the probe gives the victim's label.

The candidate with the highest score is the identified base. Scores are "higher = this candidate is
the base", so a pooled ROC over (victim, candidate) pairs measures identification as a detection task.
"""
from __future__ import annotations

import numpy as np
import torch

from ftaudit.devices import module_device
from ftaudit.models.lm import LMWrapper


@torch.no_grad()
def encoder_features(model: LMWrapper, state: dict, ids: np.ndarray, batch: int = 256) -> np.ndarray:
    """[n, 2·d] float64: the last hidden state at position 0 and its mean over non-padding tokens."""
    model.load_state_dict(state)
    encoder = model.lm.bert
    device = module_device(model)
    out = []
    for lo in range(0, len(ids), batch):
        x = torch.from_numpy(ids[lo:lo + batch]).to(device)
        real = (x != model.pad_id) if model.pad_id is not None else torch.ones_like(x, dtype=torch.bool)
        bias = torch.zeros(real.shape[0], 1, 1, real.shape[1], device=device).masked_fill(~real[:, None, None, :], torch.finfo(torch.float32).min)
        hidden = encoder(input_ids=x, attention_mask=bias).last_hidden_state
        mean = (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        out.append(torch.cat([hidden[:, 0], mean], dim=-1).double().cpu().numpy())
    return np.concatenate(out)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return (train - mu) / sd, (test - mu) / sd


def _fit_probe(x: np.ndarray, target: np.ndarray, l2: float, iters: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression to soft targets [n, K] by L-BFGS; L2 on the weights (mean loss + l2·‖W‖²/n)."""
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)
    w = torch.zeros(x.shape[1], target.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(target.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(tt * torch.log_softmax(xt @ w + b, -1)).sum(-1).mean() + l2 * (w ** 2).sum() / len(x)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe_score(features: np.ndarray, answers: np.ndarray, n_classes: int, l2: float = 1.0) -> float:
    """Cross-fitted mean log-likelihood of the victim's answers (probabilities [n, K] or labels [n])
    under a linear probe on ``features`` [n, d]; higher = the features explain the answers better."""
    target = answers if answers.ndim == 2 else np.eye(n_classes)[answers]
    n = len(features)
    if n < 4:
        raise ValueError(f"base identification needs at least 4 queries, got {n}")
    folds = (np.arange(n) % 2 == 0)
    total = 0.0
    for train in (folds, ~folds):
        xtr, xte = _standardise(features[train], features[~train])
        w, b = _fit_probe(xtr, target[train], l2)
        logp = torch.log_softmax(torch.from_numpy(xte) @ w + b, -1).numpy()
        total += float((target[~train] * logp).sum())
    return total / n


def identify_base(candidate_features: dict[str, np.ndarray], answers: np.ndarray, n_classes: int,
                  l2: float = 1.0) -> tuple[str, dict[str, float]]:
    """(best candidate, every candidate's probe score) for one victim's answers on the queries."""
    scores = {name: probe_score(f, answers, n_classes, l2) for name, f in candidate_features.items()}
    return max(scores, key=scores.get), scores
