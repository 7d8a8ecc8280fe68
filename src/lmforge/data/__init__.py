"""Reading data files into typed records; splits; batching.

Readers register themselves by format name and suffix (``readers.READERS``); importing this package
imports every module that defines one, so a format is found whichever module is imported first.
"""

from lmforge.data import readers, tagged  # noqa: F401  (registration of the readers they define)
