"""Ground truth for the estimator: exact tensor bytes of real training steps, measured on fake tensors.

See :mod:`benches.truth.faketensor` (``measure``) and :mod:`benches.truth.run_cases`.
"""
