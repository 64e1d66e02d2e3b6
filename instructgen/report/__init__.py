"""One static HTML page per run: `page.py` builds its sections from the files `sources.py` reads.

`instructgen report RUN_DIR -o report.html`: data, cost, training, evaluation and settings of a
run folder laid out as `make recipe` writes it (see `sources.py`), plots inline, no server. A
section whose files are missing says so, and the page renders all the same.
"""
