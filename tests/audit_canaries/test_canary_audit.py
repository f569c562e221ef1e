"""Canaries for a one-run audit: injection, the manifest, and the audit of a tiny fine-tuned GPT-2."""
import json
import warnings

import numpy as np
import pytest

from ftaudit.empirical.canaries import canary_audit, inject, read_manifest, reference_secrets
from ftaudit.errors import UserError

RECORDS = [f"record number {i} of the fine-tuning set" for i in range(40)]


# ------------------------------------------------------------------------------------ injection

def test_inject_is_deterministic_by_seed():
    a = inject(RECORDS, n=20, seed=3)
    b = inject(RECORDS, n=20, seed=3)
    c = inject(RECORDS, n=20, seed=4)
    assert a == b
    assert [x["secret"] for x in a[1]["canaries"]] != [x["secret"] for x in c[1]["canaries"]]


def test_inject_inserts_exactly_the_included_canaries_once_keeping_the_records_order():
    out, man = inject(RECORDS, n=30, seed=1, prefix="my pin is", digits=4)
    included = [c for c in man["canaries"] if c["included"]]
    assert len(out) == len(RECORDS) + len(included)
    for c in man["canaries"]:
        assert c["text"] == f"my pin is {c['secret']}" and len(c["secret"]) == 4
        if c["included"]:
            assert out[c["position"]] == c["text"] and out.count(c["text"]) == 1
        else:
            assert c["position"] is None and c["text"] not in out
    canary_slots = {c["position"] for c in included}
    assert [r for i, r in enumerate(out) if i not in canary_slots] == RECORDS
    assert len({c["secret"] for c in man["canaries"]}) == 30  # a fresh secret each
    assert man["records"] == len(RECORDS) and man["seed"] == 1 and man["digits"] == 4


def test_coins_are_fair_over_seeds():
    coins = np.array([[c["included"] for c in inject([], n=50, seed=s)[1]["canaries"]] for s in range(200)])
    assert abs(coins.mean() - 0.5) < 0.02  # 10,000 coins: sd 0.005
    # no canary index is favoured: each column is 200 fair coins (sd 0.035)
    assert np.abs(coins.mean(axis=0) - 0.5).max() < 0.15


def test_manifest_round_trips(tmp_path):
    path = tmp_path / "sub" / "canaries.json"
    _, man = inject(RECORDS, n=12, seed=7, manifest=path)
    assert read_manifest(path) == man
    assert json.loads(path.read_text())["format"] == "ftaudit-canaries"


def test_reference_secrets_are_seeded_and_never_a_canary():
    _, man = inject([], n=50, seed=2, digits=3)
    refs = reference_secrets(man, 900)
    assert refs == reference_secrets(man, 900) and len(set(refs)) == 900
    assert not set(refs) & {c["secret"] for c in man["canaries"]}
    with pytest.raises(UserError, match="do not fit"):
        reference_secrets(man, 951)


@pytest.mark.parametrize("kwargs, field", [
    (dict(records="one string", n=3), "records"),
    (dict(records=["a", 3], n=3), "records"),
    (dict(records=RECORDS, n=0), "n"),
    (dict(records=RECORDS, n=101, digits=2), "n"),
    (dict(records=RECORDS, n=3, prefix="the pin is "), "prefix"),
    (dict(records=RECORDS, n=3, prefix=""), "prefix"),
    (dict(records=RECORDS, n=3, digits=0), "digits"),
])
def test_bad_injection_arguments(kwargs, field):
    with pytest.raises(UserError) as err:
        inject(seed=0, **kwargs)
    assert err.value.field == field


def _corrupt(man, how):
    man = json.loads(json.dumps(man))
    if how == "version":
        man["version"] = 99
    elif how == "format":
        del man["format"]
    elif how == "secret":
        man["canaries"][0]["secret"] = "12x"
    elif how == "duplicate":
        man["canaries"][1]["secret"] = man["canaries"][0]["secret"]
        man["canaries"][1]["text"] = man["canaries"][0]["text"]
    elif how == "text":
        man["canaries"][0]["text"] = "something else"
    elif how == "coin":
        man["canaries"][0]["included"] = "yes"
    elif how == "empty":
        man["canaries"] = []
    elif how == "seed":
        del man["reference_seed"]
    return json.dumps(man)


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    ("dir", "is a directory"),
    ("{not json", "as JSON"),
    ("[1, 2]", "not an ftaudit canary manifest"),
    ("format", "not an ftaudit canary manifest"),
    ("version", "version 99"),
    ("secret", "is not 6 digits"),
    ("duplicate", "appears twice"),
    ("text", "not the prefix and its secret"),
    ("coin", "true/false"),
    ("empty", "no canaries"),
    ("seed", "reference_seed"),
])
def test_bad_manifests_are_user_errors(tmp_path, content, match):
    path = tmp_path / "m.json"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        if content in ("format", "version", "secret", "duplicate", "text", "coin", "empty", "seed"):
            content = _corrupt(inject(RECORDS, n=5, seed=0)[1], content)
        path.write_text(content)
    with pytest.raises(UserError, match=match) as err:
        read_manifest(path, field="--manifest")
    assert err.value.field == "--manifest"


# ---------------------------------------------------------------------------------------- audit

N_CANARIES, STEPS, REFERENCES = 64, 300, 200


def _tiny_gpt2(tok):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_layer=1, n_embd=32, n_head=2,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0))


@pytest.fixture(scope="module")
def world(shakespeare, small_tok):
    """64 canaries injected into 60 Shakespeare lines; a tiny GPT-2 fine-tuned on the result by a
    plain torch loop (each included canary inserted once, ~100 epochs), and one never trained."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lines = [x for d in shakespeare.documents[400:] for x in d.split("\n") if len(x.strip()) > 20][:60]
    records, manifest = inject(lines, n=N_CANARIES, seed=0)
    enc = small_tok(records, add_special_tokens=False, truncation=True, max_length=24)["input_ids"]
    model = _tiny_gpt2(small_tok)
    untrained = _tiny_gpt2(small_tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(STEPS):
        rows = [enc[i] for i in rng.choice(len(enc), 32, replace=False)]
        ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, :len(r)], mask[j, :len(r)] = torch.tensor(r), 1
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    trained = canary_audit(model, small_tok, manifest, references=REFERENCES)
    baseline = canary_audit(untrained, small_tok, manifest, references=REFERENCES)
    yield {"model": model, "manifest": manifest, "tok": small_tok, "trained": trained, "untrained": baseline}
    torch.set_num_threads(threads)


def test_included_canaries_are_exposed_and_the_one_run_bound_is_positive(world):
    res = world["trained"]
    inc, exc = res["exposure"]["included"], res["exposure"]["excluded"]
    assert res["canaries"] == N_CANARIES and res["included"] == inc["n"] and inc["n"] + exc["n"] == N_CANARIES
    assert inc["lo"] > exc["hi"]  # included canaries are memorised, excluded ones are not
    assert inc["value"] > 3.0 and exc["value"] < 2.0  # bits; a uniform rank averages 1.44
    assert res["exposure"]["max"] == pytest.approx(np.log2(REFERENCES + 1))
    assert res["exposure_skewnorm"]["included"]["value"] > res["exposure_skewnorm"]["excluded"]["hi"]
    assert res["epsilon_lower_bound"] > 0.5
    assert res["one_run"]["v"] <= res["one_run"]["r"] <= N_CANARIES
    assert res["accounted_epsilon"] is None and res["consistent"] is None and res["warning"] is None
    per = res["per_canary"]
    assert len(per["log_perplexity"]) == len(per["exposure"]) == N_CANARIES
    json.dumps(res)  # goes into results.json as is


def test_untrained_model_gives_no_bound_and_no_exposure_gap(world):
    res = world["untrained"]
    inc, exc = res["exposure"]["included"], res["exposure"]["excluded"]
    assert res["epsilon_lower_bound"] < 0.1
    assert inc["lo"] < exc["hi"] and exc["lo"] < inc["hi"]  # the CIs overlap


def test_a_bound_above_the_accounted_epsilon_is_flagged(world):
    eps = world["trained"]["epsilon_lower_bound"]
    args = (world["model"], world["tok"], world["manifest"])
    with pytest.warns(UserWarning, match="exceeds the accounted epsilon"):
        low = canary_audit(*args, references=REFERENCES, accounted_epsilon=eps / 2)
    assert low["consistent"] is False and "exceeds the accounted epsilon" in low["warning"]
    assert low["epsilon_lower_bound"] == eps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        high = canary_audit(*args, references=REFERENCES, accounted_epsilon=eps + 1)
    assert high["consistent"] is True and high["warning"] is None and high["accounted_epsilon"] == eps + 1


def test_audit_is_deterministic(world):
    again = canary_audit(world["model"], world["tok"], world["manifest"], references=REFERENCES, batch_size=5)
    assert again["per_canary"]["exposure"] == world["trained"]["per_canary"]["exposure"]
    assert again["epsilon_lower_bound"] == world["trained"]["epsilon_lower_bound"]
    np.testing.assert_allclose(again["per_canary"]["log_perplexity"], world["trained"]["per_canary"]["log_perplexity"],
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, field", [
    (dict(references=0), "references"),
    (dict(delta=1.0), "delta"),
    (dict(level=1.0), "level"),
    (dict(accounted_epsilon=-1.0), "accounted_epsilon"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_audit_arguments(world, kwargs, field):
    with pytest.raises(UserError) as err:
        canary_audit(world["model"], world["tok"], world["manifest"], **kwargs)
    assert err.value.field == field


def test_a_bad_in_memory_manifest_is_a_user_error(world):
    with pytest.raises(UserError, match="not an ftaudit canary manifest"):
        canary_audit(world["model"], world["tok"], {"canaries": []})


def test_a_loaded_model_is_unwrapped(world):
    from types import SimpleNamespace

    loaded = SimpleNamespace(model=world["model"], tokenizer=world["tok"], task="causal-lm")
    res = canary_audit(loaded, None, world["manifest"], references=REFERENCES)
    assert res["per_canary"]["exposure"] == world["trained"]["per_canary"]["exposure"]
    with pytest.raises(UserError, match="causal LM"):
        canary_audit(SimpleNamespace(model=None, tokenizer=None, task="classification"), None, world["manifest"])


def test_inject_is_exported_lazily():
    import ftaudit

    assert ftaudit.inject is inject and "inject" in ftaudit.__all__
