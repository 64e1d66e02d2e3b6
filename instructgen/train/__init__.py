"""Training (extra [train]): LLaVA's two stages on our JSON; read `data.py` first.

In order: `data.py` (records, templates, tokens, images), `model.py` (assemble CLIP +
projector + LLM as a transformers `LlavaForConditionalGeneration`), `loop.py` (one training
loop on accelerate), `export.py` (checkpoints a user loads, and `chat`).
"""
