-- LLM answers kept by kra-evaluator (issue #18): re-running the same evaluation re-uses them and
-- costs nothing, while a changed prompt, race input, model, endpoint or seed never hits them.
-- `cache_key` is the sha256 of all five; the answer is the model's text as received.

CREATE TABLE llm_responses (
    cache_key          TEXT PRIMARY KEY,
    endpoint           TEXT NOT NULL,
    model              TEXT NOT NULL,
    prompt_sha256      TEXT NOT NULL,
    input_sha256       TEXT NOT NULL,
    seed               INTEGER NOT NULL,
    answer             TEXT NOT NULL,
    prompt_tokens      INTEGER,
    completion_tokens  INTEGER,
    created_at         TEXT NOT NULL
);
