"""Curation: responses -> LLaVA records, quarantine, statistics; read `build.py` first.

`parse.py` turns one response into turns and flags, `build.py` writes llava_instruct.json,
quarantine.jsonl and stats.json, and `category_words.py` holds the COCO category words the
flags check against.
"""
