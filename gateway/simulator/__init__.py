"""Built-in simulated models: an OpenAI-compatible server for demos, tests and benchmarks.

The gateway talks to it over real HTTP exactly as to vLLM or OpenAI. Routes:
``POST /v1/chat/completions`` (streaming or not), ``GET /v1/models``,
``GET /healthz``, ``GET /_sim/stats`` (per model: ``requests``, ``errors``, ``served`` (answers that
reached the client; a stream once its first chunk is out), ``abandoned`` (answers whose client had
left) and ``faults`` by kind), ``GET``/``POST /_sim/faults`` (fault injection, see ``faults.py``),
``POST /_sim/reset`` (clears the counters and the received headers), and ``GET /sim/received``
(the headers of the last 256 chat-completions requests, oldest first, names lower-cased, without
``Authorization`` or ``Cookie``: e.g. the ``traceparent`` a caller propagated). ``/sim/stats`` and
``/sim/reset`` are the same as their ``/_sim/`` names. Any ``Authorization`` header is accepted.

Answer semantics (deterministic; tests rely on them)
----------------------------------------------------
The *question* is the last user message (the last message if none is from the
user). Its **truth**, by the first rule that applies:

1. arithmetic: an integer expression with ``+ - *`` (the multiplication sign too, ``*`` binding
   tighter) after "what is" / "what's" / "compute" / "calculate" / "evaluate",
   or followed by ``=`` or ``?`` ("What is 17 + 25?" -> ``42``); wrong answers
   are truth +1, -1, +2, -2;
2. multiple choice: two or more option lines ``A. ...``, ``B) ...`` or
   ``(C) ...`` (letters A-J); the truth is one offered letter picked by a
   blake2b hash of the question, wrong answers are the other offered letters;
3. otherwise a word from ``SPAN_WORDS`` picked by hash; wrong answers are the
   four words after it in that ring.

Its **difficulty** (``difficulty_of``, logit scale, clamped to [-3, 5]) is
``-2 + 0.5·log2(1 + words/4) + 0.25·numbers (max 8) + 0.15·math symbols
(max 10) + 1 per distinct hard phrase (prove, proof, derive, step by step,
explain why, theorem, integral, derivative, optimise, algorithm, complexity,
implement, debug; max 3) + 1 if it has code`` (a triple-backtick fence or a line
starting with def/class/import/#include/function). "hi" is about -1.8,
"What is 17 + 25?" about -1.1, "Prove ... Explain why step by step." about 2.

A model answers correctly with ``p = sigmoid(ability - difficulty)``; otherwise
it gives a distractor chosen uniformly. At ``temperature == 0`` the draw is a
blake2b hash of (model, every message) so the same prompt always gets the same
answer (and all ``n`` choices agree); at ``temperature > 0`` (absent means 1.0,
as in OpenAI) every choice is a fresh draw from the server RNG, or from an RNG
seeded by (``seed``, model, prompt) when the request has a ``seed``.

The **content** is ``"The answer is X."`` followed by filler words up to the
model's ``output_tokens`` (never shorter than that sentence). Stop sequences
cut it (finish_reason ``stop``); ``max_tokens`` / ``max_completion_tokens``
truncate it (finish_reason ``length``). Tokens are ``count_tokens``
(``\\w+|[^\\w\\s]``); ``prompt_tokens`` is the sum over message contents (text
parts only), ``completion_tokens`` the sum over choices of the returned text.

With ``logprobs: true`` each choice carries ``logprobs.content`` with a single
entry for the answer token X: ``logprob = log(p)`` when correct,
``log((1 - p) / number of distractors)`` when wrong, and ``top_logprobs`` the
most likely candidates (truth first whenever ``p`` beats each distractor).
Streams attach it to each choice's first content chunk.

A conversation that ends with an **assistant message** (after at least one other message) is a
prefill: the model continues that text instead of answering afresh. It answers only the rest of
the answer that begins with it (its own at temperature 0, or the one for whichever candidate
answer the text already states), with the same filler after it, so ``prefill + reply`` reads as
one answer; ``max_tokens`` counts from the prefill's end, and ``prompt_tokens`` includes it. The
draw ignores the prefill (it sees the prompt as when the answer began).

Tools and structured output
---------------------------
With ``tools`` the model calls one (``tool_choice`` a named function: that one; ``auto`` or
absent: the tool whose name and description share most words with the question, but prose when
the last message is a tool result; ``required``: always; ``none``: never): ``message.tool_calls``
holds one call whose ``arguments`` are valid against the function's ``parameters`` and carry the
drawn answer X in the first string or number field; ``finish_reason`` is ``tool_calls``; streams
send the call's head and then its arguments in pieces, as OpenAI does. ``response_format``
``json_object`` answers ``{"answer": X}``, ``json_schema`` a JSON instance of the schema (rules in
``structured.py``). Each of the ``n`` choices is shaped from its own draw.

Timing and failures
-------------------
Non-streaming answers wait ``ttft_ms + completion_tokens / tokens_per_s``;
streams wait ``ttft_ms`` and then pace 4-token chunks at ``tokens_per_s``,
sleeping in batches. ``ttft_ms = 0`` and ``tokens_per_s = 0`` mean no sleep at
all. The first ``fail_first`` requests to a model (since start or the last
``POST /_sim/reset``), and then a share
``error_rate`` of them, fail at once with ``error_status`` and an OpenAI error
body (429 adds ``retry-after: 0``). Unknown models get 404, bad bodies 400 (``stream_options``
without ``stream`` too, as OpenAI and vLLM refuse it).
"""

from .answers import p_correct
from .models import DEFAULT_MODELS, SimConfigError, SimModel, load_models
from .prompts import SPAN_WORDS, Truth, difficulty_of, truth_of
from .runner import RunningSimulator, run, start
from .server import build_app
from .tokens import count_tokens

__all__ = [
    "DEFAULT_MODELS",
    "SPAN_WORDS",
    "RunningSimulator",
    "SimConfigError",
    "SimModel",
    "Truth",
    "build_app",
    "count_tokens",
    "difficulty_of",
    "load_models",
    "p_correct",
    "run",
    "start",
    "truth_of",
]
