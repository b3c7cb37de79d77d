"""What was tried while choosing the router's settings, for the report's "What was tried" section.

Validation APGR of each file's pair, measured with this benchmark's code (or the scripts named in
the notes) during development; not recomputed by a run.
"""

# What was tried while choosing the settings (validation APGR of each file's pair, measured with
# this benchmark's code during development; not recomputed by a run).
TRIED = [
    "| what | mmlu_pro | arena_chat | cruxeval_code | llmrouter_mixed | theoremqa_stem | note |",
    "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    "| previous router (MMLU-Pro only; the four other pairs unseen, ranked by difficulty) "
    "| 0.565 | 0.480 | 0.520 | 0.694 | 0.592 | |",
    "| five files, per-file centred targets, one head per model across files "
    "| 0.584 | 0.475 | 0.556 | 0.802 | 0.449 | a model in two files (gpt-4-0314: chat grades and "
    "TheoremQA accuracy) got one head for both |",
    "| + a raw-level target column | 0.583 | 0.476 | 0.554 | 0.799 | 0.404 | no gain |",
    "| heads per (model, file), mixed by the neighbours' file shares; 1,000 memory prompts per file "
    "| 0.573 | 0.484 | 0.555 | 0.821 | 0.402 | the TheoremQA heads themselves rank badly |",
    "| heads on in-sample latents (not out-of-fold) | 0.581 | 0.516 | 0.570 | 0.730 | 0.600 | "
    "calibration lost: MMLU-Pro pool frontier at half gemini-pro's cost 91.8% of its quality (97.2% "
    "out-of-fold) |",
    "| heads on latents 0.3 in-sample / 0.7 out-of-fold | 0.584 | 0.502 | 0.572 | 0.780 | 0.584 | "
    "MMLU-Pro log-loss 0.589 (out-of-fold 0.583, in-sample 0.615); pool frontier 94.4%; but \"hi\" "
    "got P 0.51 (Llama-8B) vs 0.75 (70B): MMLU-Pro heads extrapolated it as an average question |",
    "| **+ standardised log length as one more latent column (shipped)** | 0.594 | 0.504 | 0.573 | 0.766 "
    "| 0.621 | every head sees length directly: \"hi\" now 0.69 vs 0.73 |",
    "| a CPU sentence-embedding model | not tried | | | | | the representations report could not even "
    "encode MMLU-Pro's train split on this machine in 25 min; assess() would leave its budget |",
    "| *after shipping: the shipped recipe refitted with seeds 0–2, mean (routing_seeds.md)* "
    "| 0.591 | 0.507 | 0.571 | 0.774 | 0.617 | the reference for the rows below, which are each a change "
    "to it; MMLU-Pro's range over the seeds is 0.581–0.597 |",
    "| rows weighted so each file's total goes as n^0.75 / n (domain balance 0.25 / 0; shipped 0.5), "
    "seed 0 | 0.593 / 0.593 | | | | | TheoremQA +0.01–0.02, Arena −0.004 / −0.013 |",
    "| head L2 0.003 (seeds 0–2) / 0.03 (seeds 0–1), shipped 0.01 | 0.590 / 0.594 | | | | | "
    "the other files within their seeds' spread |",
    "| heads on out-of-fold latents averaged over 3 fold draws, seed 0 | 0.594 | | | | 0.638 | |",
    "| neighbour memory as 1,000 spherical k-means centroids of each file's prompts, each with its "
    "members' mean outcomes (seeds 0–2) | 0.594 | | | | | MMLU-Pro's spread over seeds 6× smaller "
    "(0.592–0.596); the mix +0.014, TheoremQA −0.010 |",
    "| neighbour memory of 2,000 prompts per file (seeds 0–1) | 0.597 | | | | 0.596 | TheoremQA "
    "−0.017 / −0.031 against the same seeds; the memory, the router's largest per-request cost, 48% "
    "larger |",
    "| each model's neighbour rate from the 52 nearest prompts *of its own file* instead of the 52 "
    "nearest overall (seeds 0–2) | 0.590 | 0.506 | 0.571 | 0.776 | 0.616 | the shipped recipe's "
    "figures: a large file was not crowding a small file's prompts out of what its models' rates "
    "read. Adapted LODO routers: Arena 0.477, TheoremQA 0.649 (shipped 0.478 / 0.652). Short "
    "prompts' assess() p50 1.1–1.9× slower (a partition per file; three alternating runs on a "
    "loaded machine). With 2,000 prompts per file: 0.593 / "
    "0.503 / 0.573 / 0.775 / 0.609 |",
    "| a latent of 13 columns (shipped 9), seed 0 | 0.579 | 0.491 | 0.573 | 0.773 | 0.499 | stopped "
    "after one seed |",
    "| two fits averaged (seeds 0 and 1: the mean of their predicted gains) | 0.596 | 0.503 | 0.572 | 0.776 | "
    "0.619 | not shipped: the pair scores between its members (seed 0: 0.594 / 0.504 / 0.573 / 0.766 / 0.621, "
    "seed 1: 0.597 / 0.504 / 0.571 / 0.782 / 0.617), within 0.003 of their mean, for twice the neighbour search "
    "and latent per request; stopped before a third seed |",
    "| the spread (stronger half of a file's models minus the weaker half, as `spread_target`) as the "
    "latent's last column in place of its last principal component, seed 0 | 0.584 | 0.503 | 0.578 | 0.809 | "
    "0.601 | stopped after one seed: MMLU-Pro −0.010 and TheoremQA −0.020 against the same seed |",
    "| heads of models with at least 3,000 rows in a file (MMLU-Pro's 28) also on the neighbours' 64-d LSA "
    "embedding of the prompt (standardised; head L2 0.01 / 0.03 / 0.003), seeds 0 and 1 | 0.580 / 0.583 / 0.578 "
    "(seed 1: 0.583 / 0.582) | | | | | not shipped: below the same seeds' 0.594 / 0.597; with 500 rows or more "
    "and L2 0.03 (90 heads), seed 0: 0.583 / 0.504 / 0.559 / 0.830 / 0.643 |",
]

TRIED_ADAPTING = [
    "| what | mmlu_pro | arena_chat | cruxeval_code | llmrouter_mixed | theoremqa_stem | note |",
    "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    "| adapted LODO router before: fresh latent of 4 columns, heads on [base, fresh, knn] "
    "| 0.584 | 0.506 | 0.576 | 0.843 | 0.493 | the previous report |",
    "| TheoremQA adapted from a base fitted on arena, CRUXEval and the mix, fresh latent 4 columns, heads "
    "forced to stack / length / blend 0 / 0.5 / 1 | | | | | 0.485 / 0.545 / 0.472 / 0.491 / 0.509 | "
    "that base alone: 0.581; every head was worse than length |",
    "| same, fresh latent 8 columns: stack / blend 1 | | | | | 0.577 / 0.598 | |",
    "| same, fresh latent 16 columns (one per model): stack / blend 1 | | | | | 0.660 / 0.667 | cross-validation "
    "on the train split picked blend 1 (pair APGR 0.544 vs stack 0.544, base-input head 0.515, length 0.497) |",
    "| new heads may keep the base as a prior: its difficulty logit with a slope and offset per model, or that "
    "plus a correction under a fixed L2 prior τ = 300 / 100 / 30 / 10, chosen with the one-standard-error "
    "rule towards the prior (shipped in `blend.py`; all five files in the adapted column above) "
    "| | 0.478 | | | 0.652 | "
    "Every file picks τ 300. Arena, forcing each candidate: prior 0.475, τ 300 0.478, τ 10 0.479, "
    "length 0.503, blend 0 0.496, blend 0.25 0.496, stack 0.491, the base 0.537 (62 validation prompts; "
    "paired bootstrap of adapted − base: −0.059, sd 0.027); on the train split (out-of-fold) the named "
    "pair ranks the other way round: the base's difficulty 0.509, prior 0.503, τ 300 0.538, blend 0.25 0.542, "
    "stack 0.548, and the base's difficulty over all of Arena's pairs scores 0.488 against 0.52–0.57 for "
    "every adapted candidate |",
    "| same, τ grid widened to 3000 / 1000 / … / 10 | | 0.478 | | | 0.611 | TheoremQA: the one-SE rule picks "
    "τ 1000 (CV 0.582 vs the best, τ 300, 0.590). Not kept: it was widened on a misreading of the CV table "
    "(its peak, τ 300, is inside the grid) |",
    "| same, the prior's correction leaves the length column unpenalised (every head may lean on length as "
    "freely as on the prior) | | 0.489 | | | 0.637 | Not kept: within noise. Over 20 cuts of each train split"
    " at its train/validation proportions (`halves --halves 20 --share 0.79`), the named pairs: Arena 0.537 →"
    " 0.542, CRUXEval 0.562 → 0.563, maths/QA/code 0.803 → 0.801, TheoremQA 0.547 → 0.568; the judged pairs: "
    "Arena 0.603 → 0.598, TheoremQA 0.591 → 0.597; on validation Arena 0.478 → 0.489 (the base: 0.537) and "
    "TheoremQA 0.652 → 0.637 |",
    "| same, a model the base already knew (by name, in another file: 4 of Arena's 15, 2 of TheoremQA's 16) "
    "also keeps the base's own head for it in its prior (the prior: slopes on the base's difficulty and on that "
    "head's logit) | | 0.496 | | | 0.623 | Not kept: within noise. Over their judged pairs on validation Arena "
    "0.490 → 0.486, TheoremQA 0.647 → 0.648; over 20 cuts at the train/validation proportions the named pairs "
    "Arena 0.537 → 0.538, TheoremQA 0.547 → 0.541, the judged pairs 0.603 → 0.601 and 0.591 → 0.591; the base "
    "(Arena 0.537 on validation) stays ahead |",
    "| LODO difficulty + b × length (standardised), b = 0.25 / 0.5 / 1 / 2 | 0.490 / 0.492 / 0.496 / 0.503 "
    "| | | | | MMLU-Pro LODO router (0.488) vs length 0.511: its learned difficulty ranks this pair below "
    "random, and no weight on length lifts it past length alone |",
    "| one model under two spellings read as one (MMLU-Pro's Meta-Llama-3.1-8B-Instruct is the mix's "
    "llama-3.1-8b-instruct): the MMLU-Pro LODO router ranks the named pair by the mix's head for the weak model "
    "against difficulty for the unseen strong one | 0.502 | | | | | shipped (`gateway/router/names.py`: case, an "
    "organisation prefix, `_`, a `Meta-` before `Llama` and `-hf` do not tell models apart), though still below "
    "length (0.511) here: real deployments and data files spell one model several ways. Over "
    "each unseen file whole (train and validation), for the pairs whose two models the LODO router knows by "
    "name from other files: MMLU-Pro Mistral-7B-Instruct-v0.1 → Mixtral-8x7B-Instruct-v0.1 (Arena's heads) "
    "0.518, its difficulty 0.479, length 0.457; TheoremQA gpt-3.5-turbo → gpt-4-0314 (Arena's heads) 0.571, "
    "difficulty 0.459, length 0.604: heads learned on another file transfer better than difficulty, which "
    "ranks both below random |",
    "| WordLlama (PyPI 0.4.0.post1, l2_supercat 256-d, weights in the wheel), ridge onto the shared "
    "difficulty, LODO: hashed n-grams → + WordLlama | 0.485 → 0.489 | 0.464 → 0.482 | 0.538 → 0.530 "
    "| 0.715 → 0.722 | 0.505 → 0.520 | feature-level test (a ridge on the router's own design matrix, not the "
    "full router) |",
    "| WordLlama, ridge onto the pair's gain on the file's own train split: hashed → + WordLlama "
    "| 0.563 → 0.565 | 0.513 → 0.516 | 0.550 → 0.544 | 0.879 → 0.885 | 0.637 → 0.672 | not shipped: +0.00–0.03 "
    "on four files, −0.01 on CRUXEval, for tokenising every prompt (short: +0.017 ms p50 on 0.275 ms; "
    "2,000 tokens: 42 ms vs assess()'s 88 ms p50 measured side by side on the loaded machine, i.e. "
    "~+50%, past the 10 ms p99 budget), +3.7 s load, 16 MB and the `tokenizers` dependency. Offline it "
    "only works by reading the wheel's files directly: `WordLlama.load()` looks for the tokenizer "
    "in the wrong folder and tries to download it |",
]

# Difficulty targets for pairs the router has never seen (leave-one-domain-out), feature-level:
# `python -m benchmarks.routing_quality.lodo_targets` fits a ridge from the router's design matrix (hashed n-grams +
# structural features, idf on the training rows) on the other four files' train splits onto each
# target, and the router's 1PL head on those latents (in-sample, no neighbours: "1PL difficulty"
# here is not the full router's LODO figure). Selection: mean over the five held-out files of the
# gap-weighted APGR over every model pair of the held-out file's *train* split whose means differ by
# >= 0.05 ("CV"); the validation columns are the named pairs, for the record only.
TRIED_LODO = [
    "| target ranked by (LODO) | CV (held-out train splits, all pairs) | mmlu_pro | arena_chat | cruxeval_code "
    "| llmrouter_mixed | theoremqa_stem | note |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    "| prompt length | 0.509 | 0.511 | 0.473 | 0.493 | 0.623 | 0.557 | |",
    "| shared difficulty (today's column 0: minus the mean centred score, standardised per file) | 0.517 "
    "| 0.489 | 0.464 | 0.534 | 0.717 | 0.505 | ridge alone |",
    "| 1PL difficulty δ on the latent (what the router ranked an unseen pair by before) | 0.515 | 0.483 | 0.463 "
    "| 0.531 | 0.732 | 0.494 | |",
    "| spread: mean score of the file's stronger half of models − weaker half, standardised per file | 0.528 "
    "| 0.524 | 0.503 | 0.446 | 0.563 | 0.512 | its own ridge column; read linearly off the latent: 0.527 CV, "
    "0.528 / 0.527 / 0.471 / 0.534 / 0.508 |",
    "| spread, top vs bottom quarter | 0.522 | 0.530 | 0.511 | 0.469 | 0.454 | 0.551 | |",
    "| rank contrast: Σ_m (mean_m − pool mean) · centred score_m (all ordered pairs' gains) | 0.528 | 0.523 "
    "| 0.506 | 0.455 | 0.517 | 0.570 | |",
    "| 1PL expected gain σ(a_hi − δ) − σ(a_lo − δ), a = quartiles of the abilities / ±1 | 0.506 / 0.511 "
    "| 0.510 / 0.512 | 0.494 / 0.494 | 0.525 / 0.525 | 0.468 / 0.498 | 0.478 / 0.484 | a bump around the "
    "pool's middle: worse than δ on four files |",
    "| (1 − w) z(δ) + w z(spread read off the latent), w = 0.25 / 0.5 / 0.75 | 0.523 / 0.534 / 0.533 "
    "| 0.491 / 0.507 / 0.522 | 0.471 / 0.490 / 0.517 | 0.525 / 0.504 / 0.480 | 0.733 / 0.689 / 0.605 "
    "| 0.503 / 0.503 / 0.487 | **shipped, w 0.5** (`train.rank_head`, the router's `difficulty`; δ still "
    "gives unseen models' P): the CV choice, above δ on every held-out file's pairs but the mix's (0.001 "
    "below) (per file 0.510 / "
    "0.513 / 0.498 / 0.650 / 0.501 against δ's 0.499 / 0.490 / 0.495 / 0.651 / 0.442). Through the fitted "
    "routers, standardised on their own training rows: the table \"A pair of models the router never saw\" "
    "above. Its named pairs: MMLU-Pro's still below length, CRUXEval's and the mix's 3–4 points lower than "
    "with δ (still above length); first left out for those, shipped once the same pairs were read over each "
    "whole file |",
    "| shared difficulty from the structural features alone, ridge penalty 1 / 100 (`--regularisation`) "
    "| 0.527 / 0.527 | 0.508 / 0.510 | 0.461 / 0.463 | 0.530 / 0.530 | 0.760 / 0.763 | 0.428 / 0.417 | the best "
    "CV here, but TheoremQA falls 8–9 points and MMLU-Pro stays below length |",
    "| shared difficulty, n-grams + structure, ridge penalty 3 with structure ×0.3 (the router's) / 10 ×1 / "
    "30 ×1 / 100 ×3 (`--regularisation`) | 0.517 / 0.521 / 0.525 / 0.526 | 0.489 / 0.499 / 0.505 / 0.508 "
    "| 0.464 / 0.459 / 0.459 / 0.457 | 0.534 / 0.535 / 0.533 / 0.531 | 0.717 / 0.735 / 0.746 / 0.755 "
    "| 0.505 / 0.516 / 0.488 / 0.451 | stronger penalties slide towards structure alone: +0.01 CV, no penalty "
    "lifts MMLU-Pro past length, and the penalty also shapes the in-domain latent; not shipped |",
    "| z(δ) + b z(length), b = 0.25 / 0.5 / 1 / 2 (each scaled by its spread on the training rows) "
    "| 0.513 / 0.511 / 0.509 / 0.509 | 0.486 / 0.490 / 0.497 / 0.505 | 0.459 / 0.461 / 0.467 / 0.469 "
    "| 0.529 / 0.527 / 0.522 / 0.513 | 0.718 / 0.706 / 0.679 / 0.657 | 0.487 / 0.501 / 0.515 / 0.539 "
    "| more length, less CV: the length δ already holds (its own column's weight in δ is −0.03 to −0.07 "
    "of δ's spread) is what transfers; not shipped |",
    "| z(δ) + b z(shared difficulty from the structural features alone, penalty 100), b = 0.5 / 1 / 2 "
    "| 0.520 / 0.522 / 0.524 | 0.498 / 0.503 / 0.506 | 0.459 / 0.458 / 0.457 | 0.535 / 0.534 / 0.533 "
    "| 0.758 / 0.765 / 0.772 | 0.456 / 0.432 / 0.424 | +0.005–0.009 CV for 4–7 points of TheoremQA, and "
    "MMLU-Pro stays below length; not shipped |",
]

# What the all-pairs tables (``all_pairs.py``) showed when they were written; the tables themselves are
# read from the results folder, this reading is not recomputed by a run.
ALL_PAIRS_READING = [
    "Reading: on arena_chat adapting does not win over all pairs either. Averaged over its 105 pairs the "
    "adapted router scores 0.467 against its base's 0.553 (length 0.474, TF-IDF 0.496, shipped 0.514); over "
    "the 90 pairs with a train gap of at least 0.05 it ties its base (0.490 vs 0.497), and there prompt "
    "length leads (0.543; shipped 0.528, TF-IDF 0.508). Over Arena's pairs the "
    "bootstrap cannot tell adapted from base (53% and 60% of resamples favour adapted; its centre, +0.01 to "
    "+0.02, is not the all-pairs point estimate, −0.086, because a few pairs that nearly tie on 64 prompts "
    "decide that mean): the named pair's clear loss (−0.059, sd 0.027) does not show up as a consistent loss "
    "over the file, and the train-split cross-validation's ranking (adapted ahead) does not show up as a gain. "
    "On the four other files adapting beats its base by 0.09–0.25 on the pairs with a train gap of at least "
    "0.05 (98.5–100% of resamples) and is at or above the TF-IDF ridge on the file's labels and the shipped "
    "router, except CRUXEval over all pairs (TF-IDF 0.708, shipped 0.710, adapted 0.675), a lead that is gone "
    "on its 519 pairs with a gap of at least 0.05. Over all pairs, means and bootstrap sds are dominated by "
    "pairs that nearly tie on validation (CRUXEval's and the mix's sds 10 and 20): read the medians, the "
    "shares and the second table. The bases rank a pair of models they never saw by their difficulty (half "
    "the 1PL difficulty, half the predicted spread) and read a model under another file's spelling of its "
    "name: with the 1PL difficulty alone and exact names they scored, over all pairs, 0.511 / 0.520 / 0.453 "
    "/ 0.621 / 0.406 (now 0.526 / 0.553 / 0.543 / 0.617 / 0.443).",
]
