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
    "| LODO difficulty + b × length (standardised), b = 0.25 / 0.5 / 1 / 2 | 0.490 / 0.492 / 0.496 / 0.503 "
    "| | | | | MMLU-Pro LODO router (0.488) vs length 0.511: its learned difficulty ranks this pair below "
    "random, and no weight on length lifts it past length alone |",
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
