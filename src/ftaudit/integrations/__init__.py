"""Integrations of ftaudit into other tools' training loops.

``ftaudit.integrations.transformers.AuditCallback`` measures, during a ``transformers.Trainer`` run,
how much the model being trained leaks its fine-tuning records. Submodules import their tool lazily:
importing this package imports nothing heavy.
"""
