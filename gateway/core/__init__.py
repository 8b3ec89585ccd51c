"""The gateway's pure pieces, beneath everything else: no Django, no I/O, nothing of ours but
`core` itself. The error tree and its bodies, capacity-limit shapes, JSON and text checks, SSE
framing, prices, usage, secret redaction, client addresses, throttled logs."""
