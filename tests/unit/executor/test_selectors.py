"""Selecting among samples: extraction, votes, ties, unextractable answers, judge replies."""

from __future__ import annotations

import time

from gateway.executor.answers import choice_letter, extract_answer, number, short_span
from gateway.executor.sampling import texts
from gateway.executor.selectors import parse_judge_choice, vote


def test_extracts_letters_numbers_and_short_spans() -> None:
    assert choice_letter("The answer is (B).") == "B"
    assert choice_letter("Answer: C because ...") == "C"
    assert choice_letter("I think so") is None  # a pronoun is not option I
    assert choice_letter("the answer is a number") is None
    assert number("so the answer is 1,000.0 apples") == "1000"
    assert number("x = 3, y = 4, total 7") == "7"
    assert short_span("The answer is Paris.") == "paris"
    assert extract_answer("The answer is (D). Because...") == "D"


def test_vote_picks_the_most_frequent_answer() -> None:
    chosen = vote(["The answer is B.", "The answer is C.", "Answer: C", "The answer is (C)."])
    assert chosen.index == 1
    assert chosen.agreement == 0.75
    assert chosen.evidence["votes"] == {"B": 1, "C": 3}


def test_vote_tie_goes_to_the_earliest_answer_and_says_so() -> None:
    chosen = vote(["The answer is 5.", "The answer is 7.", "The answer is 7.", "The answer is 5."])
    assert chosen.index == 0
    assert chosen.evidence["tie"] == "broken by the earliest sample"


def test_unextractable_answers_fall_back_to_their_text_then_the_first_sample() -> None:
    long = "word " * 20
    chosen = vote([long, "something else entirely " * 3, long])
    assert chosen.index == 0 and chosen.agreement == 2 / 3
    assert vote(["", "  "]).index == 0
    assert "no answer could be extracted" in vote(["", ""]).evidence["note"]


def test_judge_reply_is_parsed_or_rejected() -> None:
    assert parse_judge_choice("Candidate 2", 3) == 1
    assert parse_judge_choice("2", 3) == 1
    assert parse_judge_choice("the best is number 9", 3) is None
    assert parse_judge_choice("none of them", 3) is None


def test_a_very_long_answer_is_read_for_its_answer_at_its_end_in_bounded_time() -> None:
    """The extractors read the whole text on the event loop: three 20 MB samples (an upstream sending an
    answer that never ends) held it, and every request on the worker, for about twelve seconds of CPU."""
    # (an answer stated first is read too, as a short one's is: this one's is stated only at its end)
    reasoning = "Let us think. At first sight it is 3, " + "and then on reflection " * 900_000
    texts = [reasoning + "so the answer is 42.", reasoning + "so the answer is 42.", "x" * (20 << 20)]
    started = time.process_time()
    chosen = vote(texts)
    assert time.process_time() - started < 1.5
    assert chosen.evidence["votes"]["42"] == 2 and chosen.index == 0


def test_a_long_answer_that_states_its_answer_first_is_read_for_it() -> None:
    """Answers read at their end only (`ANSWER_TAIL_CHARS`), one that says "The answer is (B)." and then explains
    for a few pages was keyed by the last number of its explanation: samples that all said B split the vote."""
    explanation = "We consider each option in turn, as the reaction proceeds. " * 90
    texts = [f"The answer is (B).\n\n{explanation}Option A would need {n} moles." for n in (3, 7, 12)]
    assert len(texts[0]) > 5_000
    chosen = vote(texts)
    assert chosen.evidence["votes"] == {"B": 3}
    assert extract_answer(f"The answer is 42.\n\n{explanation}It is not 7.") == "42"


def _calling(city: str, spacing: str = "") -> dict[str, object]:
    arguments = f'{{"city":{spacing}"{city}"}}'
    return {"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{city}{spacing!r}", "type": "function",
                 "function": {"name": "get_weather", "arguments": arguments}}]}}


def test_samples_that_call_tools_are_voted_on_by_their_calls() -> None:
    """Read as their text alone, every tool-calling sample was empty: a best-of vote took the first sample
    whatever the others called, and an agreement cascade read any tool calls as samples that disagree."""
    answers = [text for _, text in texts([{"choices": [_calling("Rome"), _calling("Paris"), _calling("Paris", " "),
                                                       _calling("Oslo")]}])]
    chosen = vote(answers)
    assert chosen.index == 1 and chosen.agreement == 0.5  # the ids differ, and the spacing: one call
    assert len(chosen.evidence["votes"]) == 3 and "Paris" not in str(chosen.evidence)  # digests, not arguments
    assert "get_weather" in answers[0] and "Rome" in answers[0]  # what a judge is shown
    legacy = {"message": {"role": "assistant", "function_call": {"name": "f", "arguments": "{\"a\": 1}"}}}
    assert texts([{"choices": [legacy]}])[0][1].startswith("Tool calls: ")
    assert texts([{"choices": [{"message": {"role": "assistant", "content": "The answer is 4."}}]}])[0][1] \
        == "The answer is 4."
