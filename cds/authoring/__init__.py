"""cds.authoring: rule-author tooling above the engine, the cards and the replay.

`examples` (`cds rules test`: every rule's examples through the engine and the reference
evaluator), `docs` (`cds rules docs`: docs/rules.md) and `explain` (`cds explain`: why a
file gave its cards). The rule language itself (cds.rules) knows none of them.
"""
