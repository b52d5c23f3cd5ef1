"""The run folder (``artifacts/<recipe name>/``) as a typed contract.

* ``entry``: ``Entry``, one row of a run (precision, target, budget, CPU backend, size), made from
  settings or parsed from a tag / result name in one place, and the shared constants
  (``NOBUDGET``, ``NOT_RUN``).
* ``layout``: ``RunLayout``, every path in a run folder.
* ``info``: ``RunInfo``, run.json as a pydantic model (read, validated, written).
"""

from optim.runfolder.entry import NOBUDGET, NOT_RUN, Entry
from optim.runfolder.info import BatchInfo, GpuInfo, InputInfo, RunInfo
from optim.runfolder.layout import RunLayout

__all__ = ["NOBUDGET", "NOT_RUN", "BatchInfo", "Entry", "GpuInfo", "InputInfo", "RunInfo", "RunLayout"]
