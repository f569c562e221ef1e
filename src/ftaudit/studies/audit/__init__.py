"""The ``audit`` study: a user's own fine-tuned model, its members and non-members (``ftaudit audit``).

``config`` (``AuditConfig``), ``scoring`` (``record_scores``, ``attack_summary``: also used by the
Trainer callback), ``outputs`` (records.csv, verdict, resolvable FPR, gate), ``demo`` (``--demo``),
``study`` (``STUDY``).
"""
