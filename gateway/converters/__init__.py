"""Protocol converters: pure functions and small state machines over plain JSON-like data.

No Django imports here, and no I/O: a converter takes dicts (or one upstream event at a time) and
returns dicts or lists of events. The Anthropic Messages ⇄ OpenAI Responses mapping is described in
docs/anthropic-mapping.md: `spec N.M` and `§N.M` in this package cite its numbered sections, and
`DESIGN.md 2.N` cites section 2.N of docs/reference.md.
"""
