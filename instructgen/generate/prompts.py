"""Prompts and seeds: load `prompts/` and `seeds/`, render chat messages for one context.

Our layout: `prompts/<task>/system.j2` (Jinja), `prompts/context.j2` (the user message that
presents an image context; a task folder may override it), `seeds/<task>/NNN.yaml` (one
few-shot example: `captions`, `boxes`, `response`).
LLaVA's public layout is accepted too: a task folder holding `system_message.txt` with
`NNN_caps.txt` / `NNN_conv.txt` pairs is used as written (its seeds come from that folder).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from instructgen.contracts import TASKS, ImageContext
from instructgen.errors import InputError, TemplateError
from instructgen.files import read_text

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROMPTS = PROJECT_ROOT / "prompts"
DEFAULT_SEEDS = PROJECT_ROOT / "seeds"
INSTRUCTIONS_DIR = DEFAULT_PROMPTS / "instructions"
LLAVA_FOLDER_NAMES = {"detail": ("detail_description",), "complex_reasoning": ("complex",)}


@dataclass(frozen=True, slots=True)
class Seed:
    """One few-shot example: the user message (a rendered context) and the ideal reply."""

    source: str
    user: str
    assistant: str


@dataclass(frozen=True)
class TaskPrompt:
    """Everything needed to turn an ImageContext into the messages of one task's request."""

    task: str
    system: str
    seeds: tuple[Seed, ...]
    context_template: jinja2.Template

    def prefix(self) -> list[dict]:
        """System message then seed pairs: identical for every request of this task."""
        messages = [{"role": "system", "content": self.system}]
        for seed in self.seeds:
            messages.append({"role": "user", "content": seed.user})
            messages.append({"role": "assistant", "content": seed.assistant})
        return messages

    def user_message(self, context: ImageContext, image_part: dict | None = None) -> dict:
        """The user message presenting `context`; with `image_part`, the image, then the text."""
        text = render_template(self.context_template, context_vars(context))
        if image_part is None:
            return {"role": "user", "content": text}
        return {"role": "user", "content": [image_part, {"type": "text", "text": text}]}

    def messages(self, context: ImageContext, image_part: dict | None = None) -> list[dict]:
        """The full message list for `context`: prefix, then the real context."""
        return [*self.prefix(), self.user_message(context, image_part)]


def context_vars(context: ImageContext) -> dict:
    """The variables a context template sees: captions, boxes (category, bbox), image fields."""
    return {
        "image_id": context.image_id,
        "file_name": context.file_name,
        "width": context.width,
        "height": context.height,
        "captions": list(context.captions),
        "boxes": [{"category": b.category, "bbox": list(b.bbox)} for b in context.boxes],
    }


def render_template(template: jinja2.Template, variables: dict) -> str:
    """Render, turning a missing variable into a TemplateError naming the template file:line."""
    try:
        return template.render(variables).strip()
    except jinja2.UndefinedError as e:
        raise TemplateError(f"{_template_position(template)}: {e.message}") from None


def _template_position(template: jinja2.Template) -> str:
    """`file:line` of the template frame in the exception being handled."""
    tb = sys.exc_info()[2]
    where = template.filename or template.name or "<template>"
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == template.filename:
            where = f"{template.filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _environment(*search: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,  # plain text for a language model, not HTML
    )


def _load_template(env: jinja2.Environment, name: str, root: Path) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(
            f"{e.filename or name}:{e.lineno}: template syntax error: {e.message}"
        ) from None
    except jinja2.TemplateNotFound:
        raise TemplateError(f"{root}: no template {name}") from None


def _task_folder(prompts_dir: Path, task: str) -> Path:
    for name in (task, *LLAVA_FOLDER_NAMES.get(task, ())):
        if (prompts_dir / name).is_dir():
            return prompts_dir / name
    raise TemplateError(
        f"{prompts_dir}: no prompt folder for task '{task}' (expected {prompts_dir / task})"
    )


def load_seed(path: Path, context_template: jinja2.Template) -> Seed:
    """Read one seeds/<task>/NNN.yaml: its context (captions, boxes) and its response."""
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise TemplateError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict) or not data.get("captions") or not data.get("response"):
        raise TemplateError(f"{path}: a seed needs 'captions' (a list) and 'response' (text)")
    context = ImageContext.from_json(
        {
            "image_id": data.get("image_id", 0),
            "file_name": data.get("image", ""),
            "width": data.get("width", 0),
            "height": data.get("height", 0),
            "captions": data["captions"],
            "boxes": data.get("boxes") or [],
        },
        where=str(path),
    )
    user = render_template(context_template, context_vars(context))
    return Seed(str(path), user, str(data["response"]).strip())


def load_task_prompt(
    task: str,
    prompts_dir: Path = DEFAULT_PROMPTS,
    seeds_dir: Path = DEFAULT_SEEDS,
    image_attached: bool = False,
) -> TaskPrompt:
    """Load one task's system prompt, context template and seeds (either layout).

    `image_attached` is the system template's variable of that name: true when each request
    carries its image beside the context (the seed examples stay text only).
    """
    if task not in TASKS:
        raise InputError(f"unknown task '{task}' (choose from {', '.join(TASKS)})")
    prompts_dir, seeds_dir = Path(prompts_dir), Path(seeds_dir)
    if not prompts_dir.is_dir():
        raise InputError(f"{prompts_dir}: no such prompts folder")
    folder = _task_folder(prompts_dir, task)
    env = _environment(folder, prompts_dir, DEFAULT_PROMPTS)
    context_template = _load_template(env, "context.j2", folder)

    llava_system = folder / "system_message.txt"
    if llava_system.is_file():
        system = read_text(llava_system).strip()
        seeds = tuple(
            Seed(
                str(caps),
                read_text(caps).strip(),
                read_text(_sibling(caps, "_caps.txt", "_conv.txt")).strip(),
            )
            for caps in sorted(folder.glob("*_caps.txt"))
        )
        return TaskPrompt(task, system, seeds, context_template)

    system = render_template(
        _load_template(env, "system.j2", folder), {"task": task, "image_attached": image_attached}
    )
    if not (seeds_dir / task).is_dir():
        raise InputError(
            f"{seeds_dir}: no seeds folder for task '{task}' (expected {seeds_dir / task}; "
            "an empty folder renders without examples)"
        )
    seed_files = sorted((seeds_dir / task).glob("*.yaml"))
    seeds = tuple(load_seed(p, context_template) for p in seed_files)
    return TaskPrompt(task, system, seeds, context_template)


def read_instructions(path: Path) -> tuple[str, ...]:
    """Question phrasings, one per non-blank line of `path` (e.g. instructions/brief.txt)."""
    phrasings = tuple(line.strip() for line in read_text(path).splitlines())
    phrasings = tuple(p for p in phrasings if p)
    if not phrasings:
        raise InputError(f"{path}: no question phrasings (write one per line)")
    return phrasings


def _sibling(path: Path, suffix: str, other: str) -> Path:
    sibling = path.with_name(path.name[: -len(suffix)] + other)
    if not sibling.is_file():
        raise TemplateError(
            f"{path}: no matching {sibling.name} (LLaVA layout pairs NNN_caps/NNN_conv)"
        )
    return sibling
