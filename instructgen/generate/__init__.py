"""Generation: COCO annotations -> contexts -> teacher requests; read `render.py` first.

`coco.py` turns captions and boxes into `ImageContext` lines, `prompts.py` loads the Jinja
system prompts and few-shot seeds, `render.py` writes one Batch API request per context and
task, `images.py` adds the image a vision teacher sees (a URL or an inlined JPEG), and
`template_backend.py` is the labelled naive baseline that answers without a model.
"""
