"""ScienceQA: problems -> training data and questions -> scores; read `problems.py` first.

`problems.py` holds the pure parts (format codes, records, answer extraction, scoring) and
`files.py` reads the official `problems.json` layout, the Hugging Face parquet layout and
answer files.
"""
