"""Internal alias of :mod:`jaxjac.data` for callers that import ``jaxjac._src.data``.

The data code lives in :mod:`jaxjac._src.idx` (the IDX format),
:mod:`jaxjac._src.datasets` (the sources) and :mod:`jaxjac._src.batches`
(example orders); import the public :mod:`jaxjac.data` instead of this module.
"""

from jaxjac.data import *  # noqa: F403
from jaxjac.data import __all__ as __all__
