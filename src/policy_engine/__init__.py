"""policy_engine: social-assistance policy (社会救助) as versioned YAML decision tables.

    import policy_engine as pe
    engine = pe.load("policies/anhui")
    decision = engine.decide(facts, as_of="2023-07-01")
    decision["dibao"].eligible, decision["dibao"].amount
    print(decision.explain(lang="zh"))

The public API is exactly ``__all__``; everything else is private and may change.
"""

from .compile import ENGINE_VERSION as __version__
from .diagnostics import Diagnostic, FactsError, PolicyEngineError, PolicyError
from .engine import Decision, Engine, Outcome, load

__all__ = [
    "Decision",
    "Diagnostic",
    "Engine",
    "FactsError",
    "Outcome",
    "PolicyEngineError",
    "PolicyError",
    "__version__",
    "load",
]
