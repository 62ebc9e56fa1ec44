"""cds.contracts: what the stages and the integrators agree on; imports pydantic only.

`cds.contracts.cards` is the card contract (topics, payload fields and values, limits,
the typed card and payload models and the JSON Schema of the payload).
"""
