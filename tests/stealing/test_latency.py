"""Architecture identification from latency: the profile's shape and cost, the nearest-profile rule on
a known case, and real timings that tell a small encoder from a large one through the black box."""
import numpy as np

from ftaudit.models.lm import bert_classifier, tiny_bert
from ftaudit.studies.stealing.blackbox import BlackBox
from ftaudit.studies.stealing.latency import LatencyGrid, clock, identify_architecture, latency_profile, timed_call


def test_profile_sends_exactly_the_rows_the_grid_costs_and_takes_medians():
    grid = LatencyGrid(lengths=(4, 8), batches=(1, 3), repeats=3, vocab=50, seed=1)
    sent, shapes = [], []
    times = iter(np.arange(1, 100, dtype=float))

    def call(x):
        sent.append(len(x))
        shapes.append(x.shape)
        return next(times)

    profile = latency_profile(call, grid)
    assert sum(sent) == grid.rows == 2 * (1 + 3) * 4
    assert profile.shape == (2, 2)
    assert set(shapes) == {(1, 4), (1, 8), (3, 4), (3, 8)}
    # 4 warm-ups, then 3 round-robin repeats over the 4 cells: cell 0 timed at calls 5, 9, 13
    assert profile[0, 0] == 9.0 and profile[1, 1] == 12.0


def test_the_attackers_clock_runs_around_the_public_call():
    """Latency is what a client of query() sees: the whole call, answers returned as they are."""
    import time

    def slow_query(x):
        time.sleep(0.02)
        return x.sum(1)

    x = np.ones((2, 3), dtype=np.int64)
    answers, seconds = timed_call(slow_query, x)
    np.testing.assert_array_equal(answers, [3, 3])
    assert seconds >= 0.02 and clock(slow_query)(x) >= 0.02


def test_nearest_profile_on_a_known_case():
    small = np.array([[1.0, 2.0], [2.0, 4.0]])
    large = small * 3
    victim = large * np.array([[1.1, 0.9], [1.0, 1.05]])  # noisy large
    found, dists = identify_architecture(victim, {"small": small, "large": large})
    assert found == "large" and dists["large"] < dists["small"]
    assert identify_architecture(small, {"small": small, "large": large})[1]["small"] == 0.0


def test_real_timings_tell_a_small_encoder_from_a_large_one(one_torch_thread):
    """Victim = a fine-tuned copy (other weights) of the large architecture; the attacker profiles its
    own random copies of both candidate architectures."""
    def classifier(layers, width, seed):
        model, init = bert_classifier(tiny_bert(100, 64, n_layer=layers, n_embd=width, seed=seed), 2, seed)
        model.load_state_dict(init)
        return model.eval()

    grid = LatencyGrid(lengths=(8, 64), batches=(1, 16), repeats=5, vocab=100, seed=0)
    own = {"1x32": BlackBox(classifier(1, 32, 0)), "4x256": BlackBox(classifier(4, 256, 0))}
    profiles = {arch: latency_profile(clock(bb.query), grid) for arch, bb in own.items()}
    victim = BlackBox(classifier(4, 256, 7))
    found, _ = identify_architecture(latency_profile(clock(victim.query), grid), profiles)
    assert found == "4x256"
    assert victim.queries_used == grid.rows
    assert (profiles["4x256"] > profiles["1x32"]).mean() >= 0.75
