"""Training: the epoch loop (:func:`train`, :mod:`~fer_study.training.loop`), the single training
step shared with ``fer-study bench`` (:mod:`~fer_study.training.step`), data, optimisation,
evaluation, precision and DDP helpers, each in its own module."""

from fer_study.training.loop import TrainHooks, train

__all__ = ["TrainHooks", "train"]
