"""Review: a local web page to accept, reject, edit and export records; read `store.py` first.

`store.py` imports a build into SQLite and exports the accepted records, `queries.py` lists and
filters them, `rescue.py` turns a quarantined response back into turns, and `app.py` serves
the page (FastAPI + Jinja).
"""
