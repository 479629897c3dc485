"""What a line decides about one part: :mod:`lineguard_edge.decisions`, shared with the edge runtime (the same
rule on the same numbers wherever a part is scored), named here for the service's layers."""

from lineguard_edge.decisions import AnomalyDecision, ClassDecision, SeverityRules, Threshold, decide

__all__ = ["AnomalyDecision", "ClassDecision", "SeverityRules", "Threshold", "decide"]
