"""Base identification from outputs on a case with a known answer, and the pruning helpers."""
import numpy as np
import torch

from ftaudit.models.lm import bert_classifier, initial_state, tiny_bert
from ftaudit.studies.stealing.identify import encoder_features, identify_base, probe_score
from ftaudit.studies.stealing.pruning import change_recall, relative_distance, top_fraction_masks


def test_probe_prefers_the_features_that_generated_the_answers():
    rng = np.random.default_rng(0)
    true, other = rng.normal(size=(64, 8)), rng.normal(size=(64, 8))
    logits = true @ rng.normal(size=(8, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    best, scores = identify_base({"true": true, "other": other}, probs, 3)
    assert best == "true" and scores["true"] > scores["other"]
    labels = probs.argmax(1)  # top-1 answers identify it too
    assert identify_base({"true": true, "other": other}, labels, 3)[0] == "true"
    assert probe_score(true, probs, 3) <= 0  # a mean log-likelihood


def test_head_only_victim_is_traced_to_its_base_among_same_architecture_twins():
    """Two BERTs of one architecture (different seeds); the victim is a head on top of base A:
    its answers are a function of A's features, so the probe picks A over its twin B."""
    torch.manual_seed(0)
    bases = {name: tiny_bert(100, 16, n_layer=1, n_embd=32, seed=s) for name, s in (("A", 0), ("B", 1))}
    victim, init = bert_classifier(bases["A"], 3, seed=5)
    init["lm.classifier.weight"] = init["lm.classifier.weight"] * 20  # a confident head
    victim.load_state_dict(init)
    ids = np.random.default_rng(1).integers(1, 100, size=(48, 16))
    with torch.no_grad():
        probs = torch.softmax(victim(torch.from_numpy(ids)), -1).double().numpy()
    feats = {n: encoder_features(b, initial_state(b), ids) for n, b in bases.items()}
    best, scores = identify_base(feats, probs, 3)
    assert best == "A", scores


def test_top_fraction_masks_select_the_highest_scores_and_never_a_zero_score():
    scores = {"a": torch.tensor([[0.0, 5.0], [1.0, 0.0]]), "b": torch.tensor([3.0, 0.0, 2.0])}
    masks = top_fraction_masks(scores, 3 / 7)
    assert torch.equal(masks["a"], torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(masks["b"], torch.tensor([1.0, 0.0, 1.0]))
    assert set(top_fraction_masks(scores, 1.0)) == {"a", "b"}
    assert int(sum(m.sum() for m in top_fraction_masks(scores, 1.0).values())) == 4  # only positive scores


def test_change_recall_and_relative_distance_against_direct_computation():
    base = {"w": torch.zeros(4)}
    victim = {"w": torch.tensor([0.0, 3.0, 1.0, 0.0])}
    assert change_recall({"w": torch.tensor([0.0, 1.0, 0.0, 0.0])}, base, victim, ["w"]) == 1.0
    assert change_recall({"w": torch.tensor([1.0, 0.0, 0.0, 0.0])}, base, victim, ["w"]) == 0.0
    assert abs(relative_distance(base, victim, ["w"]) - 1.0) < 1e-12
    assert relative_distance(victim, victim, ["w"]) == 0.0


def test_gradient_scores_equal_per_batch_gradients_summed_by_hand():
    """fisher = Σ_b g_b², snr = |Σ_b g_b| / √Σ_b g_b², from plain backward passes batch by batch;
    an element the loss does not reach scores 0 under both."""
    from torch import nn

    from ftaudit.studies.stealing.pruning import gradient_scores

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight[1].zero_()  # hidden unit 1 is dead for the next layer's input ...
        model[1].weight[:, 1] = 0.0  # ... so its incoming weights get no gradient
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(12, 4), torch.randint(0, 2, (12,))
    names = ["0.weight", "1.weight"]
    got = gradient_scores(model, state, names, x, y, "classification", batch=4)
    total = {n: torch.zeros_like(state[n]) for n in names}
    squares = {n: torch.zeros_like(state[n]) for n in names}
    for lo in range(0, 12, 4):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[lo:lo + 4]), y[lo:lo + 4]).backward()
        for n in names:
            g = dict(model.named_parameters())[n].grad
            total[n] += g
            squares[n] += g ** 2
    for n in names:
        torch.testing.assert_close(got["fisher"][n], squares[n])
        expected = torch.where(squares[n] > 0, total[n].abs() / squares[n].sqrt(), torch.zeros_like(squares[n]))
        torch.testing.assert_close(got["snr"][n], expected)
    assert torch.all(got["fisher"]["0.weight"][1] == 0) and torch.all(got["snr"]["0.weight"][1] == 0)
    assert torch.all(got["snr"]["0.weight"][0] <= 3 ** 0.5 + 1e-6)  # |Σ g| / √Σ g² ≤ √(batches)
