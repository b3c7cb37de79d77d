"""A prompt's images, audio and files are billed as prompt tokens: every count of a prompt that a
budget, a cost cap or a token window holds must count them, conservatively, and never as 0."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import media_tokens as media
from gateway.messages import count_messages, count_text, prompt_bound, routing_counts
from gateway.quotas import DeploymentQuotas
from gateway.state import MemoryStore, deployment_window_key
from tests.support.fake_backend import deployment

TEXT = "Describe these."
WORD = [{"role": "user", "content": TEXT}]


def _image(detail: str | None = None, url: str = "https://example.com/cat.png") -> dict[str, Any]:
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _with(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": TEXT}, *parts]}]


@pytest.mark.parametrize("detail", [None, "low", "high", "auto"])
def test_an_image_counts_its_worst_case_whatever_its_detail_says(detail: str | None) -> None:
    # `detail` binds OpenAI alone; a fallback on another provider bills the image at its own size.
    assert media.part_tokens(_image(detail)) == media.IMAGE_TOKENS == 1_600
    inline = _image(detail, url="data:image/png;base64," + "A" * 40_000)
    assert media.part_tokens(inline) == media.IMAGE_TOKENS


def test_twenty_images_and_one_word_count_twenty_images() -> None:
    # They counted 0: a request of 20 images was held as the few tokens of its one word.
    images = [_image("high") for _ in range(20)]
    assert count_messages(_with(*images)) == count_messages(WORD) + 20 * 1_600


def test_audio_counts_the_longest_its_size_can_last() -> None:
    # 100,000 base64 characters decode to 75,000 bytes: 75 s at 8 kbit/s, 32 tokens a second.
    clip = {"type": "input_audio", "input_audio": {"data": "A" * 100_000, "format": "mp3"}}
    assert media.part_tokens(clip) == 75 * 32
    wav = {"type": "input_audio", "input_audio": {"data": "A" * 100_000, "format": "wav"}}
    assert media.part_tokens(wav) == 75 * 32  # the declared format is not trusted
    tiny = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    empty = {"type": "input_audio", "input_audio": {}}
    assert media.part_tokens(tiny) == media.part_tokens(empty) == 32  # at least one second


def test_a_file_counts_from_its_size_between_one_page_and_a_hundred() -> None:
    def pdf(chars: int) -> dict[str, Any]:
        return {"type": "file", "file": {"filename": "a.pdf", "file_data": "A" * chars}}
    assert media.part_tokens(pdf(40)) == media.FILE_PAGE_TOKENS == 5_000  # one page at least
    assert media.part_tokens(pdf(40_000)) == 30_000 * 2                    # 30 KB decoded, 2 tokens a byte
    url = {"type": "file", "file": {"file_data": "data:application/pdf;base64," + "A" * 40_000}}
    assert 30_000 * 2 < media.part_tokens(url) < 30_100 * 2  # a data: URL's prefix counts too, not more
    assert media.part_tokens(pdf(2_000_000)) == media.FILE_MAX_TOKENS == 500_000  # 100 pages at most
    # Only an id: the gateway cannot see the content, so it holds the most a provider reads from it.
    assert media.part_tokens({"type": "file", "file": {"file_id": "file-abc"}}) == media.FILE_MAX_TOKENS


@pytest.mark.parametrize("part", [{"type": "video_url", "video_url": {"url": "https://x/v.mp4"}},
                                  {"type": "image"}, {"type": "input_audio", "input_audio": "oops"}])
def test_no_part_counts_zero(part: dict[str, Any]) -> None:
    assert media.part_tokens(part) > 0
    assert count_messages(_with(part)) > count_messages(WORD)


def test_text_parts_and_refusals_are_counted_as_text() -> None:
    assert count_messages([{"role": "user", "content": [{"type": "text", "text": TEXT}]}]) == count_messages(WORD)
    refusal = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}
    assert count_messages([*WORD, refusal]) - count_messages([*WORD, {"role": "assistant", "content": ""}]) \
        >= count_text("I can't help with that.")


def test_routing_prices_the_images_but_judges_the_text() -> None:
    text, tokens, _ = routing_counts(_with(_image(), _image()))
    assert text == TEXT  # the router reads the text alone
    assert tokens == count_messages(WORD) + 2 * media.IMAGE_TOKENS  # the plans are priced on the whole prompt


def test_the_byte_bound_bounds_prompts_with_images() -> None:
    messages = _with(_image(), {"type": "input_audio", "input_audio": {"data": "A" * 8_000, "format": "wav"}})
    assert prompt_bound(messages)[0] >= count_messages(messages) > count_messages(WORD) + media.IMAGE_TOKENS


def test_a_deployments_token_window_holds_the_images() -> None:
    d = deployment("small", tokens_per_minute=100_000)
    store = MemoryStore()
    quotas = DeploymentQuotas(store, {"small": d})
    messages = _with(*[_image() for _ in range(5)])
    asyncio.run(quotas.take("small", {"messages": messages, "max_tokens": 10}))
    held = asyncio.run(store.window_usage(deployment_window_key("small", "tpm")))
    assert held == count_messages(WORD) + 5 * media.IMAGE_TOKENS + 10
