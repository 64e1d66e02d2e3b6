"""instructgen: multimodal instruction-tuning data, the LLaVA way."""

__version__ = "0.1.0"
