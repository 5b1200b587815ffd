"""siba: sparse and invisible backdoor attacks (SIBA), their baselines and defenses.

The data path is one line: data set → surrogate → trigger → poisoned set → victim →
evaluation / defense → report. Each stage is a module with a small interface:

- :mod:`siba.data` — ``load_dataset``, ``ImageSet`` (uint8 tensors), ``DeviceLoader``
- :mod:`siba.models` — ``create_model`` by name, ``save_model`` / ``load_model``
- :mod:`siba.training` — ``train`` (one trainer for everything), ``accuracy``
"""

from .errors import SibaError

__version__ = "0.1.0"

__all__ = ["SibaError", "__version__"]
