"""cds.contracts: what the stages and the integrators agree on; imports pydantic only.

`cds.contracts.cards` is the card contract (topics, payload fields and values, limits,
the typed card and payload models and the JSON Schema of the payload);
`cds.contracts.facts` the fact types (the facts -> rules contract: what `cds.facts`
builds and `cds.rules` validates conditions against).
"""
