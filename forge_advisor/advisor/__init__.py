"""The advisor: the exact ranking of training plans under a GPU's memory (rust/src/search.rs), `recommend`, `fit`
and `auto_preset`; Optuna only for measured trials and stored studies."""

from forge_advisor.advisor.fit import FitReport, MethodFit, fit
from forge_advisor.advisor.recommend import Candidate, Recommendation, auto_preset, recommend
from forge_advisor.advisor.request import DEFAULT_HEADROOM, OBJECTIVES, SearchRequest

__all__ = [
    "DEFAULT_HEADROOM",
    "OBJECTIVES",
    "Candidate",
    "FitReport",
    "MethodFit",
    "Recommendation",
    "SearchRequest",
    "auto_preset",
    "fit",
    "recommend",
]
