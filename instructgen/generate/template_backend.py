"""The offline `template` backend: the paper's naive baseline, with no model at all.

Each request gets a question phrasing from prompts/instructions/ with a caption of the image
as the answer, written in the response format of the request's task so that `build` parses
it like a model's. Every line it writes says `"backend": "template"` and its body's model is
`template-baseline`: nothing here pretends to be a language model.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from instructgen.contracts import split_custom_id
from instructgen.files import atomic_writer, iter_jsonl
from instructgen.generate.prompts import INSTRUCTIONS_DIR, read_instructions
from instructgen.tokens import message_text

BACKEND = "template"
MODEL = "template-baseline"
CAPTIONS_HEADER = "Captions:"


def captions_of(user_message: str) -> list[str]:
    """The `- caption` lines under the `Captions:` header of a rendered user message."""
    lines = user_message.splitlines()
    if CAPTIONS_HEADER not in (line.strip() for line in lines):
        return []
    start = [line.strip() for line in lines].index(CAPTIONS_HEADER) + 1
    captions = []
    for line in lines[start:]:
        if not line.startswith("- "):
            break
        captions.append(line[2:].strip())
    return [c for c in captions if c]


def template_response(task: str, captions: list[str], brief: list[str], key: str) -> str:
    """The baseline text for one request, in `task`'s response format; seeded by `key`."""
    h = zlib.crc32(key.encode())
    if task == "detail":
        return " ".join(c if c.endswith((".", "!", "?")) else c + "." for c in captions)
    if task == "complex_reasoning":
        return f"Question: {brief[h % len(brief)]}\nAnswer: {captions[h % len(captions)]}"
    return "\n".join(
        f"Question: {brief[(h + n) % len(brief)]}\nAnswer: {caption}"
        for n, caption in enumerate(captions)
    )


def _last_user_message(request: dict) -> str:
    messages = (request.get("body") or {}).get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return message_text(users[-1]) if users else ""  # an image request's text part included


def _ok_line(cid: str, text: str) -> dict:
    body = {
        "id": f"template-{cid}",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    response = {"status_code": 200, "request_id": f"template-{cid}", "body": body}
    return {
        "id": f"template-{cid}",
        "custom_id": cid,
        "response": response,
        "error": None,
        "backend": BACKEND,
    }


def _error_line(cid: str, message: str) -> dict:
    error = {"code": "template_no_captions", "message": message}
    return {
        "id": f"template-{cid}",
        "custom_id": cid,
        "response": None,
        "error": error,
        "backend": BACKEND,
    }


def write_template_responses(
    requests_path: Path, output_path: Path, instructions_dir: Path = INSTRUCTIONS_DIR
) -> int:
    """Answer every request of `requests_path` with the template baseline; return the count.

    Writes Batch API output lines to `output_path` atomically. A request whose last user
    message has no `Captions:` block gets an error line (quarantined by `build`).
    """
    brief = read_instructions(Path(instructions_dir) / "brief.txt")
    n = 0
    with atomic_writer(output_path) as out:
        for lineno, request in iter_jsonl(requests_path):
            cid = str(request.get("custom_id", f"line-{lineno}"))
            parsed = split_custom_id(cid)
            task = parsed[1] if parsed else "conversation"
            captions = captions_of(_last_user_message(request))
            if captions:
                line = _ok_line(cid, template_response(task, captions, brief, cid))
            else:
                line = _error_line(
                    cid, f"{requests_path}:{lineno}: the last user message has no captions block"
                )
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    return n
