"""The audit (DESIGN.md 2.9): one record per client request, its rollups and their retention.

`entry` (the record being built) → `writer` (queue, batches, shutdown) → `store` (the database,
rollups in the same transaction) and `spool` (what shutdown could not write); `rollups` is the
pure aggregation, `retention` the daily purge, `selectors` the reads.
"""
