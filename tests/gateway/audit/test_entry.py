"""Audit entries: stored bodies never carry inline base64 payloads."""

from __future__ import annotations

import base64
import hashlib

from gateway.audit.entry import summarize_payloads


def test_payload_summaries_replace_base64_only():
    image = base64.b64encode(b"\x89PNG" + b"\0" * 2000).decode()
    body = {
        "messages": [
            {
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                    {"type": "text", "text": "short text"},
                ]
            }
        ],
        "input_audio": image,
        "prose": "word " * 200,
    }
    summary = summarize_payloads(body)
    url = summary["messages"][0]["content"][0]["image_url"]["url"]
    assert url == f"[image/png: 2004 bytes, sha256 {hashlib.sha256(image.encode()).hexdigest()}]"
    assert summary["input_audio"].startswith("[base64: 2004 bytes")
    assert summary["messages"][0]["content"][1]["text"] == "short text"
    assert summary["prose"] == "word " * 200
