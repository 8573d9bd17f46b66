"""The KD math: loss functions (:mod:`~kdlab.kd.losses`, torch only), the objective α·CE + (1−α)·D
and its method registry (:mod:`~kdlab.kd.objective`), and feature-based terms (:mod:`~kdlab.kd.features`)."""
