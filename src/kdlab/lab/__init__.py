"""The lab: a three-arm run (:mod:`~kdlab.lab.run`), multi-seed comparisons
(:mod:`~kdlab.lab.compare`), interruption and resume (:mod:`~kdlab.lab.recovery`) and the per-run
machine decisions (:mod:`~kdlab.lab.runtime`)."""
