"""Protocol converters: pure functions and small state machines over plain JSON-like data.

No Django imports here, and no I/O: a converter takes dicts (or one upstream event at a time) and
returns dicts or lists of events. The mapping is specified in ../shared/spec/anthropic-to-responses.md.
"""
