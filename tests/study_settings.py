"""Small settings of every study (a few seconds to a minute on 2 cores), for whole-study tests."""

DIGITS = ["data.audit_size=60", "data.population_size=40", "pretrain.epochs=3", "model.arch=mlp", "model.hidden=[32]",
          "pretrain.augment=0", "finetune.augment=0", "metrics.bootstrap=50"]

LM = ["lm.vocab_size=300", "lm.block_len=16", "lm.n_blocks=24", "lm.population=8", "lm.pretrain_blocks=48",
      "lm.pretrain_epochs=1", "lm.n_layer=1", "lm.n_embd=16", "lm.pretrain_batch_size=8", "finetune.batch_size=8",
      "metrics.bootstrap=50", "metrics.exposed=3"]

SMALL: dict[str, list[str]] = {
    "finetune-mia": DIGITS + ["finetune.epochs=4", "finetune.references=3"],
    "methods": DIGITS + ["finetune.epochs=3", "finetune.references=3", "sweep.methods=[full, head]", "sweep.lrs=[0.003]"],
    "dp-finetune": DIGITS + ["finetune.epochs=2", "finetune.references=3", "sweep.lrs=[0.005]", "sweep.clips=[1.0]",
                             "sweep.epsilons=[1.0, .inf]", "sweep.subsets=[head, full]", "sweep.canaries=8"],
    "forgetting": ["forgetting.models=6", "forgetting.train_size=150", "forgetting.population_size=40",
                   "forgetting.per_repetition=20", "forgetting.repetitions=[1,4]", "forgetting.inject_per_step=16",
                   "forgetting.inject_step=40", "forgetting.repeat_gap=8", "forgetting.poison_epochs=5",
                   "forgetting.checkpoints=[0,20]", "forgetting.augment=0", "forgetting.arch=mlp",
                   "forgetting.hidden=[32]", "metrics.bootstrap=50", "attack.shifts=0"],
    "tmi": ["tmi.shadows=6", "tmi.pool=24", "tmi.finetune_size=40", "data.population_size=40", "tmi.pretrain_epochs=3",
            "tmi.finetune_epochs=2", "tmi.augmentations=2", "tmi.augmentation_counts=[1, 2]", "tmi.shadow_counts=[4, 6]",
            "tmi.methods=[head]", "tmi.epsilons=[]", "tmi.sweep_victims=2", "tmi.meta_epochs=2", "model.hidden=[16]",
            "metrics.bootstrap=50"],
    "tmi-text": ["tmi.shadows=4", "tmi.pool=16", "tmi.finetune_blocks=8", "tmi.block_len=16", "tmi.vocab_size=300",
                 "tmi.n_layer=1", "tmi.n_embd=16", "tmi.pretrain_epochs=2", "tmi.finetune_epochs=1", "tmi.augmentations=2",
                 "tmi.augmentation_counts=[1]", "tmi.shadow_counts=[4]", "tmi.methods=[head]", "tmi.epsilons=[]",
                 "tmi.sweep_victims=2", "tmi.meta_epochs=3", "metrics.bootstrap=50"],
    "lm-mia": LM + ["finetune.references=3"],
    "mlm-ratio": LM + ["finetune.references=3", "finetune.epochs=1", "lm.maskings=2"],
    "lm-methods": LM + ["finetune.references=3", "sweep.methods=[full, head]", "sweep.lrs=[0.01]", "lm.block_len=24",
                        "sweep.canaries=2", "sweep.canary_references=15", "lm.reference=base"],
    "lm-extraction": ["lm.vocab_size=300", "lm.block_len=32", "lm.pretrain_blocks=48", "lm.pretrain_epochs=1",
                      "lm.n_layer=1", "lm.n_embd=16", "lm.pretrain_batch_size=8", "finetune.batch_size=8",
                      "extraction.repetitions=[1,4]", "extraction.canaries=2", "extraction.finetune_blocks=48",
                      "extraction.prompts=2", "finetune.epochs=2", "extraction.samples=2", "extraction.prefix_len=8",
                      "extraction.suffix_len=4", "metrics.bootstrap=50"],
    "stealing": ["stealing.vocab_size=300", "stealing.candidates=['1x16:wikitext2:0','1x16:shakespeare:0']",
                 "stealing.block_len=16", "stealing.pretrain_blocks=64", "stealing.pretrain_epochs=1",
                 "stealing.task_corpus=wikitext2", "stealing.classes=2", "stealing.train_per_class=8",
                 "stealing.test_per_class=4", "stealing.victim_methods=['head']", "stealing.victim_seeds=1",
                 "stealing.victim_epochs=1", "stealing.id_budgets=[4,8]", "stealing.budgets=[8]", "stealing.distill_steps=2",
                 "stealing.latency_lengths=[8]", "stealing.latency_batches=[1]", "stealing.latency_repeats=1",
                 "stealing.prune_fractions=[0.0,1.0]", "metrics.bootstrap=50"],
    # the audit needs a model and record files: its demo builds them (offline, under <out>/demo, reused)
    "audit": ["audit.demo=true", "metrics.bootstrap=50"],
}
