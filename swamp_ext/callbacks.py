"""Per-round callbacks for ``run_imp(on_round=...)``.

``TensorBoard(logdir)``: every round's figures as TensorBoard scalars (``swamp-ext run
--tensorboard DIR``), step = round; needs the ``tensorboard`` package
(``pip install 'swamp_ext[tensorboard]'``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Union

SCALARS = ("test_acc", "test_nll", "test_ece", "ensemble_acc", "ensemble_nll", "ensemble_ece",
           "sparsity", "train_loss", "seconds")


class TensorBoard:
    """Writes each RoundRecord's scalars (``round/<name>``; ``layer_density/<layer>``) under
    ``logdir``. Call ``close()`` (or use it as a context manager) when the run is done."""

    def __init__(self, logdir: Union[str, os.PathLike]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs the tensorboard package: "
                              "pip install 'swamp_ext[tensorboard]'") from None
        self.logdir = os.fspath(logdir)
        self._w = SummaryWriter(log_dir=self.logdir)

    def __call__(self, r: Any) -> None:
        for name in SCALARS:
            v = getattr(r, name)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                self._w.add_scalar(f"round/{name}", v, r.round)
        self._w.add_scalar("round/remaining_percent", 100 * (1 - r.sparsity), r.round)
        for layer, d in r.layer_density.items():
            self._w.add_scalar(f"layer_density/{layer}", d, r.round)
        self._w.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._w.close()

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
