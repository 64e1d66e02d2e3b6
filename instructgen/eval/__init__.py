"""Evaluation: answers to a question set and a judge's score; read `records.py` first.

In order: `records.py` (the question, answer and context files, in LLaVA's formats),
`answer.py` (answers from an OpenAI-compatible vision endpoint, through the batch client),
`generate.py` (batched answers of a local checkpoint; extra [train]), `verdicts.py` (a judge's
reply -> two scores), `judge.py` (judge requests, reviews, the relative score), `pope.py`
(POPE built and scored) and `plot.py` (the judge's and POPE's plots).
"""
