"""Training (extra [train]): LLaVA's two stages on our JSON; read `data.py` first.

In order: `data.py` (records, templates, tokens, images), `towers.py` (where the vision tower
is chosen: CLIP or SigLIP, by its config), `model.py` (assemble tower + projector + LLM as a
transformers `LlavaForConditionalGeneration`), `batches.py` (shuffled or length-grouped
batches), `loop.py` (one training loop on accelerate), `export.py` (checkpoints a user loads,
and `chat`), `plan.py` (`--dry-run`) and `samples.py` (`--show-sample`: what is trained).
"""
