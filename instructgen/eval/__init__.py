"""Evaluation: answers of a model to a question set, and a GPT-judge relative score.

Read in order: `records.py` (the question, answer and context files, in LLaVA's formats),
`answer.py` (answers from an OpenAI-compatible vision endpoint, through the batch client),
`generate.py` (batched answers of a local checkpoint; extra [train]), `verdicts.py` (a judge's
reply -> two scores), `judge.py` (judge requests, reviews, the relative score) and `plot.py`.
"""
