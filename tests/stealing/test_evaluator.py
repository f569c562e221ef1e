"""The base-identification evaluator: (victim, candidate) rows clustered by victim, scores that rank
a victim's base first, and bootstrap CIs that resample victims (the independent units), not the
handful of candidates."""
import numpy as np
import pytest

from ftaudit.attacks.evaluators import EvaluationRequest
from ftaudit.attacks.identify import BaseIdentification, member_rate
from ftaudit.config import MetricsConfig
from ftaudit.evaluation import evaluate
from ftaudit.metrics.paired import cluster_weights
from ftaudit.store.cache import JsonCache


def inputs(n_victims=30, n_cands=5, seed=0):
    rng = np.random.default_rng(seed)
    base = np.arange(n_victims) % n_cands
    probe = rng.normal(size=(n_victims, n_cands))
    probe[np.arange(n_victims), base] += 1.0  # the base explains the answers a little better
    arch = np.array([0, 0, 0, 1, 2])[:n_cands]
    latency = np.abs(rng.normal(0.1, 0.05, size=(n_victims, n_cands)))
    latency[arch[None, :] != arch[base][:, None]] += 1.0  # other architectures are far
    same_arch = arch[None, :] == arch[base][:, None]
    return BaseIdentification(probe=probe, latency=latency, same_arch=same_arch, base=base)


def test_rows_are_victim_major_pairs_clustered_by_victim():
    inp = inputs()
    pooled = EvaluationRequest("base-identification", inp).scores()
    assert set(pooled.scores) == {"probe-fit", "latency", "latency+probe"}
    assert len(pooled.labels) == 30 * 5
    np.testing.assert_array_equal(pooled.example, np.repeat(np.arange(30), 5))  # cluster = victim
    np.testing.assert_array_equal(pooled.target, pooled.example)
    np.testing.assert_array_equal(pooled.labels.reshape(30, 5).argmax(1), inp.base)
    assert pooled.labels.reshape(30, 5).sum(1).tolist() == [1] * 30  # one base per victim
    np.testing.assert_allclose(member_rate(pooled), np.full(30, 0.2))
    np.testing.assert_array_equal(pooled.scores["probe-fit"], inp.probe.ravel())
    np.testing.assert_array_equal(pooled.scores["latency"], -inp.latency.ravel())


def test_latency_then_probe_ranks_the_identified_architecture_first():
    inp = inputs()
    combined = EvaluationRequest("base-identification", inp).scores().scores["latency+probe"].reshape(30, 5)
    same = inp.same_arch
    assert combined[same].min() > combined[~same].max()
    for v in range(30):  # the probe's order within each group is kept
        for group in (same[v], ~same[v]):
            np.testing.assert_array_equal(np.argsort(combined[v][group]), np.argsort(inp.probe[v][group]))


def test_confidence_intervals_resample_victims(tmp_path):
    """The CI of every attack is a cluster bootstrap over the 30 victims: the metrics' bootstrap
    groups are the pooled rows' `example`, which is the victim (not one of the 5 candidates)."""
    inp = inputs()
    request = EvaluationRequest("base-identification", inp)
    metrics = MetricsConfig(bootstrap=200)
    ev = evaluate(JsonCache(tmp_path, "metrics"), request, metrics, seed=0)
    pooled = ev.pooled
    assert len(np.unique(pooled.example)) == 30
    weights = cluster_weights(pooled.example, 10, seed=0)
    # a resampled victim brings all of its candidate rows with it
    assert (weights.reshape(11, 30, 5) == weights.reshape(11, 30, 5)[..., :1]).all()
    auc = ev.by_name("probe-fit").auc
    assert auc.lo < auc.value < auc.hi


def test_mismatched_shapes_are_refused():
    inp = inputs()
    with pytest.raises(ValueError, match="victims, candidates"):
        BaseIdentification(probe=inp.probe, latency=inp.latency[:, :3], same_arch=inp.same_arch, base=inp.base)
    with pytest.raises(ValueError, match="one candidate index per victim"):
        BaseIdentification(probe=inp.probe, latency=inp.latency, same_arch=inp.same_arch, base=inp.base[:3])
