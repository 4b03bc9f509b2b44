"""Plan from the user's own data, without torch: token lengths, the max_length to choose,
batching modes (padding, packing, padding-free) priced by the estimator, steps, time and cost.

>>> from forge_advisor.dataplan import measure_lengths
>>> report = measure_lengths("forge_advisor/data/demo.jsonl", model=None)  # doctest: +SKIP
"""

from __future__ import annotations

from forge_advisor.dataplan.batching import MODE_FIELDS, MODES, BatchSim, mode_of, simulate
from forge_advisor.dataplan.lengths import LengthReport, measure_lengths
from forge_advisor.dataplan.records import DataInfo, inspect_data, iter_records

__all__ = ["MODES", "MODE_FIELDS", "BatchSim", "DataInfo", "LengthReport", "inspect_data", "iter_records",
           "measure_lengths", "mode_of", "simulate"]
