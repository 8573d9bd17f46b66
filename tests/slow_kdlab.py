"""``kdlab`` with a pause after every training batch, for the kill/stop tests.

``KDLAB_TEST_STEP_DELAY=<seconds>`` slows each training step (shuffled loaders only) so a test can
signal the process at a known point: after a given checkpoint appears, before the next one.
Without the variable it is plain ``kdlab``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from kdlab.cli import main
from kdlab.data.tensors import Batch, TensorLoader

_delay = float(os.environ.get("KDLAB_TEST_STEP_DELAY", "0"))
if _delay > 0:
    _plain_iter = TensorLoader.__iter__

    def _slow_iter(self: TensorLoader) -> Iterator[Batch]:
        for batch in _plain_iter(self):
            if self.shuffle:
                time.sleep(_delay)
            yield batch

    TensorLoader.__iter__ = _slow_iter  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
