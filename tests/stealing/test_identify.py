"""Base identification from outputs on a case with a known answer, and the pruning helpers."""
import numpy as np
import torch

from ftaudit.models.lm import bert_classifier, initial_state, tiny_bert
from ftaudit.stealing.identify import encoder_features, identify_base, probe_score
from ftaudit.stealing.pruning import change_recall, relative_distance, top_fraction_masks


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
