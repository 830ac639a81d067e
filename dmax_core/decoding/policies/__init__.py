"""The registered decoding policies, one per file (`threshold`: spec §3.1; `spd`: spec §4).

Every module here is imported, so each `BlockPolicy` subclass in it registers itself by name; adding a
policy is one new file with one class (see `dmax_core.decoding.policy` for the contract).
"""

from dmax_core.registry import import_submodules

import_submodules(__name__, __path__)
