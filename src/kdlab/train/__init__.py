"""Training: the one loop (:mod:`~kdlab.train.loop`), the :class:`~kdlab.train.distiller.Distiller`
and the machinery a loop needs — checkpoints, precision and device plans, torchrun process groups,
reproducibility, the teacher-logit cache, progress display and per-arm metrics."""
