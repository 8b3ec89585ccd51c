"""Token usage as the audit records it, from Chat Completions and Responses usage objects."""

from __future__ import annotations

from gateway.core.usage import usage_from_chat, usage_from_responses


def test_usage_from_chat_and_responses():
    chat = usage_from_chat(
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 1},
            "completion_tokens_details": {
                "reasoning_tokens": 2,
                "audio_tokens": 3,
                "accepted_prediction_tokens": 1,
                "rejected_prediction_tokens": 0,
            },
        }
    )
    assert chat.as_dict() == {
        "input_tokens": 10,
        "cached_tokens": 4,
        "output_tokens": 5,
        "reasoning_tokens": 2,
        "audio_tokens": 4,
        "accepted_prediction_tokens": 1,
        "rejected_prediction_tokens": 0,
        "total_tokens": 15,
    }
    responses = usage_from_responses(
        {"input_tokens": 7, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 2}}
    )
    assert (responses.input_tokens, responses.reasoning_tokens, responses.total_tokens) == (7, 2, 10)
    assert usage_from_chat(None).total_tokens == 0
    assert usage_from_responses({"input_tokens": "x", "output_tokens": True}).as_dict() == usage_from_chat({}).as_dict()
