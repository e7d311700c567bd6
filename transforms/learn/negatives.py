"""Which records training draws its negatives from (``corpus-match train --negatives``).

``all``: every pair not in --truth is a non-match; ``labelled``: only records named in --truth serve
as negatives. A module of its own, without TensorFlow, so the train command's flags name the choices
(``beam_jobs.commands.train``) and the trainer checks them (``transforms.learn.train.TrainConfig``)
from one definition.
"""

from __future__ import annotations

__all__ = ["NEGATIVES"]

NEGATIVES = ("all", "labelled")
