"""``ftaudit reproduce``: each study's headline claim, run in the regime it was made in and judged by
the paired CI of the difference it is about (docs/reproductions.md).

``verdict`` the rule, ``claims`` the registry, ``runner`` runs the claims' studies through the
pipeline (cached and resumable like any run), ``table`` writes the verdict table (markdown, HTML,
JSON in the store), ``command`` the CLI command. Importing the package imports nothing heavy.
"""
