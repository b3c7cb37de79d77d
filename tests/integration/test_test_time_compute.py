"""Best-of-n and cascades end to end: the gateway over HTTP, the simulated models behind it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.config import parse_config
from tests.support.lab import lab_gateway, policies_folder
from tests.support.processes import Simulator, running_gateway
from tests.support.scripted_http import ScriptedHandler, scripted_upstream

PRICE = {"small": (0.2e-6, 0.4e-6), "large": (1.0e-6, 2.0e-6)}
QUESTION = [{"role": "user", "content": "What is 17 + 25?"}]


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)


def _evidence(raw) -> dict:
    return json.loads(raw.headers["x-switchyard-evidence"])


def _assert_costs_add_up(raw) -> None:
    evidence = _evidence(raw)
    usage = raw.parse().usage
    for call in evidence["calls"]:
        price_in, price_out = PRICE[call["deployment"]]
        expected = call["prompt_tokens"] * price_in + call["completion_tokens"] * price_out
        assert call["cost_usd"] == pytest.approx(expected)
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(sum(c["cost_usd"] for c in evidence["calls"]))
    assert usage.prompt_tokens == sum(c["prompt_tokens"] for c in evidence["calls"])
    assert usage.completion_tokens == sum(c["completion_tokens"] for c in evidence["calls"])


def test_best_of_n_votes_for_the_right_answer_and_sums_the_cost(base_url: str) -> None:
    raw = _client(base_url).chat.completions.with_raw_response.create(
        model="router/vote5", messages=QUESTION, seed=7)
    assert raw.headers["x-switchyard-plan"] == "best_of:5:small:vote"
    evidence = _evidence(raw)
    assert evidence["selector"] == "vote" and evidence["winner"] == "42"
    assert evidence["votes"]["42"] == max(evidence["votes"].values())
    assert raw.parse().choices[0].message.content.startswith("The answer is 42")
    _assert_costs_add_up(raw)


def test_clients_n_still_means_their_choices(base_url: str) -> None:
    completion = _client(base_url).chat.completions.create(model="router/vote5", messages=QUESTION, seed=7, n=2)
    assert len(completion.choices) == 2
    assert completion.choices[0].message.content.startswith("The answer is 42")


def test_asking_for_more_choices_than_a_plan_answers_with_is_never_a_shorter_200(base_url: str) -> None:
    """best-of-5 picks the client's choices from its five samples: `n=8` used to get five choices and a 200.
    A policy of best-of plans alone refuses it; one with a single plan among its candidates answers with it."""
    with pytest.raises(openai.UnprocessableEntityError, match=r"n \(8 choices > the 5 it answers with\)"):
        _client(base_url).chat.completions.create(model="router/vote5", messages=QUESTION, n=8)
    raw = _client(base_url).chat.completions.with_raw_response.create(
        model="router/test-time-compute", messages=QUESTION, n=8)
    assert raw.headers["x-switchyard-plan"].startswith("single:")
    assert len(raw.parse().choices) == 8


def test_a_failing_judge_degrades_to_vote_and_says_so(base_url: str) -> None:
    raw = _client(base_url).chat.completions.with_raw_response.create(
        model="router/judged", messages=QUESTION, seed=3)
    evidence = _evidence(raw)
    assert evidence["degraded_from"] == "judge" and evidence["selector"] == "vote"
    assert "broken" in evidence["reason"]
    assert raw.parse().choices[0].message.content


def test_a_cascade_escalates_when_the_cheap_samples_disagree(base_url: str) -> None:
    hard = [{"role": "user", "content": "Prove, step by step, what is 123 * 456 - 789 + 1011 * 12?"}]
    raw = _client(base_url).chat.completions.with_raw_response.create(
        model="router/strict-cascade", messages=hard, seed=11)
    assert raw.headers["x-switchyard-plan"] == "cascade:small>large:escalated"
    assert raw.headers["x-switchyard-model"] == "large"
    trail = _evidence(raw)["cascade"]
    assert trail[0]["escalated"].startswith("confidence")
    assert raw.parse().choices[0].message.content.startswith(f"The answer is {123 * 456 - 789 + 1011 * 12}")
    _assert_costs_add_up(raw)


def test_a_cascade_accepts_the_cheap_answer_when_confident(base_url: str) -> None:
    raw = _client(base_url).chat.completions.with_raw_response.create(
        model="router/lenient-cascade", messages=QUESTION, seed=5)
    assert raw.headers["x-switchyard-plan"] == "cascade:small>large:accepted"
    assert raw.headers["x-switchyard-model"] == "small"
    assert {c["deployment"] for c in _evidence(raw)["calls"]} == {"small"}
    _assert_costs_add_up(raw)


def test_a_selected_answer_is_streamed_after_selection(base_url: str) -> None:
    client = _client(base_url)
    whole = client.chat.completions.create(model="router/vote5", messages=QUESTION, seed=7)
    with client.chat.completions.with_streaming_response.create(
            model="router/vote5", messages=QUESTION, seed=7, stream=True,
            stream_options={"include_usage": True}) as resp:
        assert resp.headers["x-switchyard-plan"] == "best_of:5:small:vote"
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == whole.usage.total_tokens


@pytest.fixture(scope="module")
def apart_url(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Deployments that take no `n`: every sample of a best-of or cascade step is a call of its own."""
    policies = {"vote5-apart": {"description": "best-of-5 vote, one call per sample",
                                "candidates": [{"best_of": {"deployment": "small", "n": 5, "selector": "vote",
                                                            "temperature": 0.8}}],
                                "cache": {"enabled": False}},
                "cascade-apart": {"description": "an agreement cascade, one call per sample",
                                  "candidates": [{"cascade": {"steps": ["small", "large"], "confidence": "agreement",
                                                              "threshold": 0.9, "samples": 3}}],
                                  "cache": {"enabled": False}},
                "long-cascade": {"description": "three steps of sixteen samples, one call each",
                                 "candidates": [{"cascade": {"steps": ["small", "large", "large"],
                                                             "confidence": "agreement", "threshold": 1.0,
                                                             "samples": 16}}],
                                 "cache": {"enabled": False}},
                "single-or-vote": {"description": "one call, or a vote of four calls",
                                   "candidates": [{"single": "small"},
                                                  {"best_of": {"deployment": "small", "n": 4, "selector": "vote"}}],
                                   "objective": {"value_usd": 0.000001}, "cache": {"enabled": False}}}
    deployments = {"small": ("sim-small", "small"), "large": ("sim-large", "large")}
    with lab_gateway(simulator, tmp_path_factory.mktemp("apart"), policies, deployments, supports_n=False) as url:
        yield url


@pytest.mark.parametrize("policy", ["vote5-apart", "cascade-apart"])
def test_a_clients_seed_does_not_make_samples_drawn_apart_one_answer(apart_url: str, policy: str) -> None:
    """A seed makes a provider draw the same answer to the same request: samples drawn as calls of their
    own, each sent the client's seed, were one answer five times, a unanimous vote whatever the model
    knew, and a cascade that accepted its cheap step without ever escalating. They are still reproducible."""
    hard = [{"role": "user", "content": "Prove, step by step, what is 123 * 456 - 789 + 1011 * 12?"}]

    def answers() -> list[str]:
        raw = _client(apart_url).chat.completions.with_raw_response.create(
            model=f"router/{policy}", messages=hard, seed=7)
        evidence = _evidence(raw)
        return list((evidence["cascade"][0] if "cascade" in evidence else evidence)["answers"])

    first = answers()
    assert len(set(first)) > 1, first
    assert answers() == first


def test_evidence_too_long_for_its_header_is_still_json(apart_url: str) -> None:
    """A cascade of three steps of sixteen samples, each a call of its own, lists 33 calls: the header was cut
    at 4,096 characters in the middle of them, JSON no client could parse. The list of calls is left out when
    it does not fit (the cost header and `usage` sum them), and the header says how many there were."""
    hard = [{"role": "user", "content": "Prove, step by step, what is 123 * 456 - 789 + 1011 * 12?"}]
    raw = _client(apart_url).chat.completions.with_raw_response.create(model="router/long-cascade", messages=hard)
    assert raw.headers["x-switchyard-plan"] == "cascade:small>large>large:escalated"
    header = raw.headers["x-switchyard-evidence"]
    assert len(header) <= 4096
    evidence = json.loads(header)
    assert evidence["calls_omitted"] > 16 and "calls" not in evidence  # 33, less a sample a loaded machine drops
    assert [step["step"] for step in evidence["cascade"]] == ["small", "large"]


# A long answer in a script written without spaces: to a splitter on whitespace, a few "words".
CHINESE = "巴黎是法国的首都，也是法国最大的城市，拥有悠久的历史和丰富的文化遗产，每年吸引数以百万计的游客。"
ANSWERS = {"polyglot": ("Zürich", "東京", "Zürich", "𝐀", "Zürich"), "chinese": (CHINESE,) * 5}


class _Polyglot(ScriptedHandler):
    """Answers its `n` choices with `ANSWERS[model]`: words outside ASCII (Latin-1, CJK, a letter beyond the BMP)."""

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        answers = ANSWERS[body["model"]][:body.get("n") or 1]
        choices = [{"index": i, "message": {"role": "assistant", "content": f"The answer is {a}"},
                    "finish_reason": "stop"} for i, a in enumerate(answers)]
        self._send(orjson.dumps({"id": "chatcmpl-p", "object": "chat.completion", "created": 1700000000,
                                 "model": body["model"], "choices": choices,
                                 "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}}),
                   "application/json")


@pytest.fixture(scope="module")
def polyglot_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A best-of-5 vote on each of `ANSWERS`' models, as `router/<model>`."""
    with scripted_upstream(_Polyglot) as base:
        rows = [{"name": m, "model": f"openai/{m}", "api_base": base, "tier": m,
                 "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}} for m in ANSWERS]
        votes = {m: {"candidates": [{"best_of": {"deployment": m, "n": 5, "selector": "vote"}}],
                     "cache": {"enabled": False}} for m in ANSWERS}
        config = parse_config({"deployments": rows, "default_policy": "polyglot"}, "polyglot")
        app = create_app(config, watch_policies_s=None, watch_router_s=None,
                         policies_dir=policies_folder(tmp_path_factory.mktemp("polyglot"), votes))
        with running_gateway(app) as gw:
            yield gw.base_url + "/v1"


def _voted(url: str, policy: str) -> dict:
    raw = _client(url).chat.completions.with_raw_response.create(
        model=f"router/{policy}", messages=[{"role": "user", "content": "Which city?"}])
    return _evidence(raw)


def test_evidence_naming_answers_outside_ascii_is_json(polyglot_url: str) -> None:
    """Votes name the extracted answers, which may be in any script. The header escaped them with Python's
    backslashreplace (`\\xfc`, `\\U0001d400`), which no JSON reader takes: a vote on "Zürich" was an
    evidence header the client could not parse."""
    evidence = _voted(polyglot_url, "polyglot")
    assert evidence["winner"] == "zürich"
    assert evidence["votes"] == {"zürich": 3, "東京": 1, "𝐀": 1}


def test_a_whole_answer_without_spaces_is_named_by_its_digest(polyglot_url: str) -> None:
    """A short span was six words or fewer, counted between spaces: a Chinese answer of a hundred characters
    is a few such words, so the whole answer became the vote's key, in the header and on the request's span
    whatever the tenant's `log_prompts` says, where an answer no extractor reads is named by a digest."""
    evidence = _voted(polyglot_url, "chinese")
    assert evidence["winner"].startswith("text:") and set(evidence["votes"]) == {evidence["winner"]}
    assert "巴黎" not in json.dumps(evidence, ensure_ascii=False)


def test_n_choices_are_never_asked_of_a_deployment_that_answers_one_per_call(apart_url: str) -> None:
    """`supports_n: false` was read by best-of and cascades alone: a single plan, routed or pinned, sent the
    client's `n` to such a deployment anyway, which refuses it or answers one choice billed as n. A policy
    now answers n > 1 through a plan that draws one call per choice; a pinned request is a 400 naming `n`."""
    client = _client(apart_url)
    hi = [{"role": "user", "content": "Say hi."}]
    one = client.chat.completions.with_raw_response.create(model="router/single-or-vote", messages=hi)
    assert one.headers["x-switchyard-plan"] == "single:small"
    three = client.chat.completions.with_raw_response.create(model="router/single-or-vote", messages=hi, n=3)
    assert three.headers["x-switchyard-plan"].startswith("best_of:4:small")
    assert len(three.parse().choices) == 3
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="small", messages=hi, n=2)
    assert refused.value.body["param"] == "n" and refused.value.body["code"] == "unsupported_parameter"
    assert "supports_n" in refused.value.body["message"]
    assert len(client.chat.completions.create(model="small", messages=hi).choices) == 1
