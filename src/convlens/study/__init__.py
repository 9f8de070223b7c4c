"""Studies: every experiment of a course report, and its findings as checks over the results.

A study folder (``studies/<name>/``) holds the report's configs and sweeps and a ``study.yaml``
listing them (experiments), the overrides of each budget (``small``: fewer epochs, a subset) and
the report's findings as declarative checks.

- ``spec``: ``study.yaml``, validated before anything runs
- ``runner``: ``convlens study run``: trains every experiment into one results folder (resumable)
- ``results``: the results folder read back: one row per run or sweep trial
- ``check``: ``convlens study check``: each finding's verdict (agree, disagree, not enough evidence)
"""
