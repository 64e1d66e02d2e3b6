"""The 2026 pair: a SigLIP tower, a Qwen2 LLM with its own ChatML template, and the export
that runs with no instructgen code. Tiny towers built from configs, random weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra: make install-train")
pytest.importorskip("transformers", reason="needs the [train] extra: make install-train")

from train_tiny import (  # noqa: E402
    CHATML_DEFAULT_SYSTEM,
    _texts,
    build_chatml_tokenizer,
    build_llama3_tokenizer,
    build_siglip_qwen2,
)
from transformers import (  # noqa: E402
    AutoProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from typer.testing import CliRunner  # noqa: E402

from instructgen.cli import app  # noqa: E402
from instructgen.contracts import IMAGE_TOKEN  # noqa: E402
from instructgen.errors import InputError  # noqa: E402
from instructgen.train.data import (  # noqa: E402
    IGNORE,
    TrainRecord,
    Turn,
    stop_token_ids,
    template_pieces,
    tokenize_pieces,
    wants_bos,
)
from instructgen.train.loop import TrainConfig  # noqa: E402
from instructgen.train.model import load_tokenizer  # noqa: E402
from instructgen.train.plan import plan_run  # noqa: E402

pytestmark = pytest.mark.train
ROOT = Path(__file__).resolve().parent.parent
FAST = ["--no-gradient-checkpointing", "--workers", "0", "--log-every", "1", "--precision", "fp32"]
IMAGE = "000000183872.jpg"


@pytest.fixture(scope="module")
def pair(tmp_path_factory, test_data):
    """Tiny SigLIP and Qwen2 (ChatML tokenizer) saved as folders."""
    root = tmp_path_factory.mktemp("pair")
    return build_siglip_qwen2(
        root, [test_data / "train_pretrain.json", test_data / "train_instruct.json"]
    )


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def chat_run(pair, test_data, tmp_path_factory):
    """Stage 1 (plain) then stage 2 with --template chat, through the CLI."""
    vision, llm = map(str, pair)
    root = tmp_path_factory.mktemp("chat-run")
    data, images = test_data / "train_instruct.json", str(test_data / "train_images")
    run("train", "--stage", "1", "--data", str(test_data / "train_pretrain.json"),
        "--images", images, "--vision", vision, "--llm", llm, "-o", str(root / "s1"),
        "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "2", *FAST)  # fmt: skip
    run("train", "--stage", "2", "--data", str(data), "--images", images,
        "--projector", str(root / "s1"), "-o", str(root / "s2"), "--template", "chat",
        "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "2", *FAST)  # fmt: skip
    return root / "s1", root / "s2"


def test_siglip_stage1_and_chat_stage2_record_template_family_and_full_features(chat_run):
    stage1, stage2 = chat_run
    assert json.loads((stage1 / "instructgen_train.json").read_text())["vision_family"] == "siglip"
    meta = json.loads((stage2 / "instructgen_train.json").read_text())
    assert (meta["template"], meta["vision_family"], meta["system"]) == ("chat", "siglip", None)
    config = json.loads((stage2 / "config.json").read_text())
    assert config["vision_feature_select_strategy"] == "full"
    assert config["vision_config"]["model_type"] == "siglip_vision_model"
    log = [json.loads(line) for line in (stage2 / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]


def test_siglip_tower_is_loaded_as_siglip_and_kept_frozen(chat_run, pair):
    loaded = LlavaForConditionalGeneration.from_pretrained(chat_run[1])
    assert isinstance(loaded.model.vision_tower, SiglipVisionModel)
    source = SiglipVisionModel.from_pretrained(pair[0]).state_dict()
    for name, tensor in loaded.model.vision_tower.state_dict().items():
        assert torch.equal(tensor, source[name]), name


def test_export_answers_through_autoprocessor_and_generate_with_no_instructgen_code(
    chat_run, test_data
):
    """What a user of the Hub does: AutoProcessor, apply_chat_template, generate. The script
    runs in a fresh interpreter that never imports instructgen."""
    script = f"""
import sys, json
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration
folder = {str(chat_run[1])!r}
processor = AutoProcessor.from_pretrained(folder)
model = LlavaForConditionalGeneration.from_pretrained(folder)
messages = [{{"role": "user", "content": [
    {{"type": "image"}}, {{"type": "text", "text": "What does the picture show?"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
image = Image.open({str(test_data / "train_images" / IMAGE)!r})
inputs = processor(images=image, text=prompt, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
assert "instructgen" not in sys.modules
print(json.dumps({{"prompt": prompt, "ids": inputs["input_ids"][0].tolist(),
                  "new": out[0, inputs["input_ids"].shape[1]:].tolist()}}))
"""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["prompt"] == (
        f"<|im_start|>system\n{CHATML_DEFAULT_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE_TOKEN}\nWhat does the picture show?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # The processor expands the image to the 16 tokens of a 32 px / 8 px SigLIP: no CLS extra.
    processor = AutoProcessor.from_pretrained(chat_run[1])
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert result["ids"].count(image_id) == 16
    assert 1 <= len(result["new"]) <= 4
    # ... and its ids are exactly those `answer` prompts with, as training laid them out.
    assert result["ids"] == prompt_text_ids(chat_run[1], "What does the picture show?")


def test_the_export_keeps_the_system_message_and_the_square_padding_of_training(
    pair, test_data, tmp_path
):
    """Trained with --system and --pad-to-square: HF's processor alone lays a conversation out
    with that system message and pads the image as training did."""
    from PIL import Image

    from instructgen.train.data import chat_prompt_pieces, load_pixels
    from instructgen.train.export import TrainedWith, export_model
    from instructgen.train.model import Towers, build_model, load_image_processor

    vision, llm = map(str, pair)
    tokenizer = load_tokenizer(llm)
    meta = TrainedWith(2, vision, llm, "linear", -2, "chat", True, "Look closely.", "siglip")
    folder = tmp_path / "ckpt"
    export_model(
        build_model(Towers(vision, llm), tokenizer), tokenizer, load_image_processor(vision),
        folder, meta,
    )  # fmt: skip
    processor = AutoProcessor.from_pretrained(folder)
    question = "What does the picture show?"
    parts = [{"type": "image"}, {"type": "text", "text": question}]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": parts}], add_generation_prompt=True
    )
    trained = chat_prompt_pieces(question, "chat", True, tokenizer, "Look closely.")
    assert prompt == "".join(p.text for p in trained)
    assert "<|im_start|>system\nLook closely.<|im_end|>" in prompt
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}]
    assert "Look closely." not in processor.apply_chat_template(own)
    image = test_data / "train_images" / IMAGE
    assert Image.open(image).size[0] != Image.open(image).size[1]
    pixels = processor(images=Image.open(image), text=prompt, return_tensors="pt")["pixel_values"]
    padded = load_pixels([image], load_image_processor(vision), pad_to_square=True)
    assert torch.equal(pixels, padded)
    assert not torch.equal(pixels, load_pixels([image], load_image_processor(vision), False))


def prompt_text_ids(folder: Path, question: str) -> list[int]:
    from instructgen.eval.generate import load_answerer, prompt_ids

    answerer = load_answerer(folder, torch.float32, "cpu")
    assert answerer.template == "chat"
    return prompt_ids(answerer, question, has_image=True)


def test_answer_prompts_the_chat_model_in_its_template(chat_run, test_data, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        json.dumps({"question_id": 1, "image": IMAGE, "text": "What is shown?", "category": "x"})
        + "\n"
    )
    out = tmp_path / "answers.jsonl"
    run("answer", "--questions", str(questions), "--model", str(chat_run[1]), "--images",
        str(test_data / "train_images"), "-o", str(out), "--max-new-tokens", "3")  # fmt: skip
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["metadata"]["template"] == "chat"


def test_chat_command_runs_on_the_chat_model(chat_run, test_data):
    image = test_data / "train_images" / IMAGE
    run("chat", "--model", str(chat_run[1]), "--image", str(image), "--max-new-tokens", "3",
        "What does the picture show?")  # fmt: skip


# --- the loss mask of a ChatML conversation, token by token ---


# Two questions about one image, and their answers.
TWO_ANSWERS = TrainRecord(
    "r1",
    ("a.jpg",),
    (
        Turn("human", f"{IMAGE_TOKEN}\nWhat does the picture show?"),
        Turn("gpt", "A cat on a mat."),
        Turn("human", "Can you say it another way?"),
        Turn("gpt", "A dog."),
    ),
)


@pytest.fixture(scope="module")
def chatml(test_data):
    """The ChatML tokenizer as `train` loads it (`<image>` added), no model needed."""
    tokenizer = build_chatml_tokenizer(
        _texts([test_data / "train_pretrain.json", test_data / "train_instruct.json"])
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def test_multi_turn_chatml_trains_each_answer_and_its_im_end_and_nothing_else(chatml):
    record = TWO_ANSWERS
    image_id = chatml.convert_tokens_to_ids(IMAGE_TOKEN)
    example = tokenize_pieces(
        template_pieces(record, "chat", chatml, system="Look closely."),
        chatml,
        image_id,
        tokens_per_image=3,
        max_length=2048,
        bos=False,
    )

    def ids(text: str) -> list[int]:
        return chatml(text, add_special_tokens=False)["input_ids"]

    start, end = ids("<|im_start|>"), ids("<|im_end|>")
    nl = ids("\n")
    expected: list[tuple[list[int], bool]] = [
        (start + ids("system") + nl + ids("Look closely.") + end + nl, False),
        (start + ids("user") + nl + [image_id] * 3, False),
        (ids("\nWhat does the picture show?") + end + nl + start + ids("assistant") + nl, False),
        (ids("A cat on a mat.") + end, True),
        (nl + start + ids("user") + nl + ids("Can you say it another way?") + end + nl, False),
        (start + ids("assistant") + nl, False),
        (ids("A dog.") + end, True),
        (nl, False),
    ]
    want_ids = [t for chunk, _ in expected for t in chunk]
    want_labels = [t if trained else IGNORE for chunk, trained in expected for t in chunk]
    assert example.input_ids == want_ids
    assert example.labels == want_labels
    assert example.n_images == 1


@pytest.fixture(scope="module")
def llama3(test_data):
    """A Llama-3-style tokenizer (eos `<|end_of_text|>`, turns ended by `<|eot_id|>`)."""
    tokenizer = build_llama3_tokenizer(
        _texts([test_data / "train_pretrain.json", test_data / "train_instruct.json"])
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def test_llama3_trains_each_answer_and_its_eot_id_not_the_eos_the_template_never_writes(llama3):
    record = TWO_ANSWERS
    image_id = llama3.convert_tokens_to_ids(IMAGE_TOKEN)
    example = tokenize_pieces(
        template_pieces(record, "chat", llama3), llama3, image_id, 3, 2048, bos=False
    )

    def ids(text: str) -> list[int]:
        return llama3(text, add_special_tokens=False)["input_ids"]

    eot = llama3.convert_tokens_to_ids("<|eot_id|>")
    assert eot != llama3.eos_token_id
    assert [t for t in example.labels if t != IGNORE] == (
        ids("A cat on a mat.") + [eot] + ids("A dog.") + [eot]
    )
    assert llama3.eos_token_id not in example.input_ids
    assert stop_token_ids(llama3, "chat") == [llama3.eos_token_id, eot]


@pytest.mark.parametrize("writes_bos", [True, False])
def test_a_chat_sequence_starts_with_exactly_one_bos_whether_the_template_writes_it_or_not(
    llama3, writes_bos
):
    """The tokenizer adds bos by default; a template that leaves it out (llava-1.5-hf's,
    Phi-3's) gets it prepended, as HF's processor does, and one that writes it gets no second."""
    import copy

    from train_tiny import LLAMA3_TEMPLATE

    tokenizer = copy.deepcopy(llama3)
    if not writes_bos:
        tokenizer.chat_template = LLAMA3_TEMPLATE.removeprefix("{{ bos_token }}")
    record = TrainRecord("r4", (), (Turn("human", "Why?"), Turn("gpt", "Because.")))
    pieces = template_pieces(record, "chat", tokenizer)
    assert pieces[0].text.startswith(tokenizer.bos_token) == writes_bos
    example = tokenize_pieces(pieces, tokenizer, 0, 3, 2048, bos=wants_bos("chat", tokenizer))
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert example.input_ids.count(tokenizer.bos_token_id) == 1
    prompt = "".join(p.text for p in pieces)
    hf_ids = tokenizer(prompt, add_special_tokens=not writes_bos)["input_ids"]
    assert example.input_ids == hf_ids


def test_the_chat_layout_is_the_tokenizers_own_rendering(chatml):
    record = TrainRecord("r2", (), (Turn("human", "Why?"), Turn("gpt", "Because.")))
    pieces = template_pieces(record, "chat", chatml)
    rendered = chatml.apply_chat_template(
        [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}],
        tokenize=False,
    )
    assert "".join(p.text for p in pieces) == rendered
    assert [p.text for p in pieces if p.train] == ["Because.<|im_end|>"]


# --- what `--show-sample` shows ---


@pytest.mark.parametrize(
    ("stage", "template", "trained"),
    [
        (1, "plain", ["A lone person skiing down a slope of fresh snow.\n"]),
        (2, "v1", None),
        (2, "chat", None),
    ],
)
def test_show_sample_writes_segments_that_concatenate_to_the_decoded_sequence(
    pair, test_data, tmp_path, stage, template, trained
):
    vision, llm = map(str, pair)
    data = test_data / ("train_pretrain.json" if stage == 1 else "train_instruct.json")
    result = run("train", "--stage", str(stage), "--data", str(data), "--images",
                 str(test_data / "train_images"), "--vision", vision, "--llm", llm,
                 "-o", str(tmp_path), "--template", template, "--dry-run",
                 "--show-sample", "2")  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    records = json.loads(data.read_text())[:2]
    assert [row["id"] for row in rows] == [r["id"] for r in records]
    tokenizer = load_tokenizer(llm)
    for row, record in zip(rows, records, strict=True):
        text = "".join(seg["text"] for seg in row["segments"])
        assert text.count(IMAGE_TOKEN) == 1  # 16 image tokens shown as one <image>
        answers = [t["value"].strip() for t in record["conversations"][1::2]]
        got = [seg["text"] for seg in row["segments"] if seg["trained"]]
        if template == "chat":
            assert got == [f"{a}<|im_end|>" for a in answers]
        elif template == "v1":
            assert [g.strip() for g in got] == [f"{a}{tokenizer.eos_token}" for a in answers]
        untrained = "".join(seg["text"] for seg in row["segments"] if not seg["trained"])
        assert not any(a in untrained for a in answers)
        # the whole: the decoded ids of the example, image block collapsed
        assert text == decoded_sequence(record, template, tokenizer)
    if trained is not None:
        assert [s["text"] for s in rows[0]["segments"] if s["trained"]] == trained
    assert "record " + records[0]["id"] in result.output


def decoded_sequence(record: dict, template: str, tokenizer) -> str:
    from instructgen.train.data import parse_records

    [parsed] = parse_records([record], Path("x.json"))
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    example = tokenize_pieces(
        template_pieces(parsed, template, tokenizer), tokenizer, image_id, 16, 2048,
        bos=wants_bos(template, tokenizer),
    )  # fmt: skip
    ids = []
    for token in example.input_ids:
        if not (token == image_id and ids and ids[-1] == image_id):
            ids.append(token)
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_show_sample_without_dry_run_is_refused(pair, test_data, tmp_path):
    args = ["train", "--stage", "1", "--data", str(test_data / "train_pretrain.json")]
    args += ["--images", str(test_data / "train_images"), "-o", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--show-sample", "2"])
    assert result.exit_code != 0
    assert "--show-sample goes with --dry-run" in str(result.exception)


# --- bad towers and tokenizers: one red line ---


def one_line_error(args: list[str]) -> str:
    """Run the CLI in a fresh process, as a user does: exit 1 and one line on stderr."""
    argv = ["instructgen", *args]
    code = f"import sys; sys.argv = {argv!r}; from instructgen.cli import main; main()"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 1, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert "Traceback" not in line
    return line


def test_an_unsupported_tower_family_is_one_line_naming_the_supported_ones(
    pair, test_data, tmp_path
):
    tower = tmp_path / "convnext"
    tower.mkdir()
    (tower / "config.json").write_text(json.dumps({"model_type": "convnext"}))
    line = one_line_error(
        ["train", "--stage", "1", "--data", str(test_data / "train_pretrain.json"), "--images",
         str(test_data / "train_images"), "--vision", str(tower), "--llm", str(pair[1]),
         "-o", str(tmp_path / "out")]
    )  # fmt: skip
    assert "model_type 'convnext' is not supported" in line
    assert "clip_vision_model" in line and "siglip_vision_model" in line


def test_a_tokenizer_without_a_chat_template_under_template_chat_is_one_line(
    towers, test_data, tmp_path
):
    vision, llm = map(str, towers)  # the tiny Llama's word-level tokenizer has no template
    line = one_line_error(
        ["train", "--stage", "2", "--data", str(test_data / "train_instruct.json"), "--images",
         str(test_data / "train_images"), "--vision", vision, "--llm", llm,
         "-o", str(tmp_path / "out"), "--template", "chat"]
    )  # fmt: skip
    assert "the tokenizer has no chat template" in line and "--template v1" in line


# --- plans for today's pair ---


def test_siglip_plan_counts_parameters_as_the_built_model_has_them(pair, test_data, tmp_path):
    vision, llm = map(str, pair)
    cfg = TrainConfig(stage=2, data=test_data / "train_instruct.json",
                      images=test_data / "train_images", output=tmp_path, vision=vision,
                      llm=llm, template="chat")  # fmt: skip
    plan = plan_run(cfg)
    from instructgen.train.model import Towers, build_model

    model = build_model(Towers(vision, llm), load_tokenizer(llm))
    assert plan.params.total == sum(p.numel() for p in model.parameters())
    assert plan.params.vision == sum(p.numel() for p in model.model.vision_tower.parameters())
    assert (plan.vision_family, plan.template, plan.image_tokens_per_sample) == (
        "siglip",
        "chat",
        16,
    )


def test_so400m_qwen2_7b_plan_from_config_only_folders(test_data, tmp_path):
    """configs/ holds the public shapes; the LLM folder gets a stand-in tokenizer."""
    vision = ROOT / "configs" / "towers" / "siglip-so400m-patch14-384"
    llm = tmp_path / "qwen2-7b"
    llm.mkdir()
    (llm / "config.json").write_bytes(
        (ROOT / "configs" / "towers" / "qwen2-7b-instruct" / "config.json").read_bytes()
    )
    build_chatml_tokenizer(_texts([test_data / "train_instruct.json"])).save_pretrained(llm)
    cfg = TrainConfig(stage=2, data=test_data / "train_instruct.json",
                      images=test_data / "train_images", output=tmp_path, vision=str(vision),
                      llm=str(llm), template="chat")  # fmt: skip
    plan = plan_run(cfg, gpus=8)
    assert plan.image_tokens_per_sample == 729  # (384 // 14) ** 2, no CLS
    # LlavaForConditionalGeneration with the same configs, on the meta device
    config = LlavaConfig(
        vision_config=SiglipVisionConfig.from_pretrained(vision),
        text_config=Qwen2Config.from_pretrained(llm),
        vision_feature_select_strategy="full",
        projector_hidden_act="linear",
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    assert plan.params.total == sum(p.numel() for p in model.parameters())
    assert plan.params.llm == 7_615_616_512  # Qwen2-7B's published count (untied head)
    assert plan.params.projector == 1152 * 3584 + 3584 + 3584 * 3584 + 3584
    assert (plan.vision_family, plan.template) == ("siglip", "chat")


# --- length-grouped batches ---


def mixed_records(test_data: Path, tmp_path: Path) -> Path:
    """The instruction records and, as text-only records, the same dialogues without images."""
    records = json.loads((test_data / "train_instruct.json").read_text())
    texts = []
    for record in records:
        turns = [
            {**turn, "value": turn["value"].replace(IMAGE_TOKEN, "").strip()}
            for turn in record["conversations"]
        ]
        texts.append({"id": f"text-{record['id']}", "conversations": turns})
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(records + texts))
    return path


def grouped_order(pair, data: Path, images: Path, seed: int, epochs: int):
    from instructgen.train.batches import LengthGroupedBatches, record_length
    from instructgen.train.data import read_records

    records = read_records(data, images)
    sampler = LengthGroupedBatches(
        [record_length(r, 16) for r in records], [bool(r.images) for r in records], 4, seed
    )
    return records, [sampler.batches(epoch) for epoch in range(epochs)]


def test_grouped_batches_hold_one_modality_and_every_record_once_per_epoch(
    pair, test_data, tmp_path
):
    data = mixed_records(test_data, tmp_path)
    records, epochs = grouped_order(pair, data, test_data / "train_images", seed=0, epochs=2)
    for batches in epochs:
        assert sorted(i for batch in batches for i in batch) == list(range(len(records)))
        for batch in batches:
            assert len({bool(records[i].images) for i in batch}) == 1
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    again = grouped_order(pair, data, test_data / "train_images", seed=0, epochs=2)[1]
    assert again == epochs  # a function of seed and epoch
    assert (
        grouped_order(pair, data, test_data / "train_images", seed=1, epochs=1)[1][0] != (epochs[0])
    )


def test_grouped_batches_put_similar_lengths_together():
    from instructgen.train.batches import LengthGroupedBatches

    lengths = [i % 50 * 10 for i in range(400)]
    grouped = LengthGroupedBatches(lengths, [True] * 400, 8, seed=0).batches(0)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped)
    shuffled = torch.randperm(400, generator=torch.Generator().manual_seed(0)).tolist()
    plain = [shuffled[k : k + 8] for k in range(0, 400, 8)]
    plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain)
    assert spread * 5 < plain_spread
    assert max(lengths[i] for i in grouped[0]) == max(lengths)  # longest batch first


def test_a_grouped_run_resumed_after_a_crash_sees_the_same_batches(pair, test_data, tmp_path):
    """Stage 2 on image and text-only records (6 batches an epoch), crashed after step 4."""
    import shutil

    from instructgen.train.loop import train

    data = mixed_records(test_data, tmp_path)
    vision, llm = map(str, pair)

    def cfg(out):
        return TrainConfig(
            stage=2, data=data, images=test_data / "train_images", output=out, vision=vision,
            llm=llm, template="chat", max_steps=8, global_batch=4, micro_batch=4,
            gradient_checkpointing=False, precision="fp32", save_every=4, resume=True,
            workers=0, log_every=1, lr=1e-2,
        )  # fmt: skip

    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    train(cfg(whole), echo=lambda _: None)
    shutil.copytree(whole / "checkpoint-4", crashed / "checkpoint-4")
    shutil.copy(whole / "train_log.jsonl", crashed / "train_log.jsonl")
    train(cfg(crashed), echo=lambda _: None)

    def curve(out):
        lines = (out / "train_log.jsonl").read_text().splitlines()
        return [(r["step"], r["epoch"], r["loss"]) for r in map(json.loads, lines)]

    a, b = curve(whole), curve(crashed)
    assert [r[:2] for r in a] == [r[:2] for r in b]
    assert [r[2] for r in a] == pytest.approx([r[2] for r in b], rel=1e-5)


def test_a_llava_folder_not_trained_here_is_prompted_in_its_own_chat_template(chat_run, tmp_path):
    import shutil

    from instructgen.eval.generate import load_answerer, prompt_ids

    folder = tmp_path / "hub-model"
    shutil.copytree(chat_run[1], folder)
    (folder / "instructgen_train.json").unlink()  # as a model from the Hub has it
    own = load_answerer(folder, torch.float32, "cpu")
    assert own.template == "chat"
    assert prompt_ids(own, "Why?", has_image=True) == prompt_text_ids(chat_run[1], "Why?")
    assert load_answerer(folder, torch.float32, "cpu", template="v1").template == "v1"


@pytest.fixture(scope="module")
def hub_llava(towers, tmp_path_factory):
    from train_tiny import build_hub_llava

    return build_hub_llava(tmp_path_factory.mktemp("hub"), *towers)


def test_chat_asks_a_llava_folder_not_trained_here_in_its_own_template(hub_llava, test_data):
    """`chat` answers as HF's own processor + generate does on that folder (llava-1.5's
    template, no bos written, one added); `--template` overrides the folder's template."""
    from PIL import Image
    from transformers import AutoProcessor

    image, question = test_data / "train_images" / IMAGE, "What does the picture show?"
    result = run("chat", "--model", str(hub_llava), "--image", str(image),
                 "--max-new-tokens", "4", question)  # fmt: skip
    processor = AutoProcessor.from_pretrained(hub_llava)
    model = LlavaForConditionalGeneration.from_pretrained(hub_llava)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.open(image), text=prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    expected = processor.tokenizer.decode(new, skip_special_tokens=True).strip()
    assert expected and result.output.strip() == expected
    run("chat", "--model", str(hub_llava), "--image", str(image), "--template", "v1",
        "--max-new-tokens", "2", question)  # fmt: skip


def test_grouped_batches_sharded_over_two_devices_keep_every_batch_whole():
    """accelerate deals the batches out to the devices; short ones must not be dropped or cut."""
    from accelerate.data_loader import BatchSamplerShard

    from instructgen.train.batches import LengthGroupedBatches

    has_image = [i % 3 != 0 for i in range(30)]  # 20 image, 10 text: 5 + 3 batches of 4
    sampler = LengthGroupedBatches(list(range(30)), has_image, 4, seed=0)
    shards = [list(BatchSamplerShard(sampler, 2, rank)) for rank in (0, 1)]
    assert [len(s) for s in shards] == [len(BatchSamplerShard(sampler, 2, 0))] * 2 == [4, 4]
    dealt = [batch for pair in zip(*shards, strict=True) for batch in pair]
    assert dealt == sampler.batches(0)


def test_a_template_that_refuses_the_system_message_names_the_record(chatml):
    refusing = build_chatml_tokenizer(["Why? Because."])
    refusing.chat_template = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + chatml.chat_template
    )
    record = TrainRecord("r9", (), (Turn("human", "Why?"), Turn("gpt", "Because.")))
    with pytest.raises(InputError, match=r"record id r9: the chat template refuses .* System role"):
        template_pieces(record, "chat", refusing, system="Be brief.")
    assert template_pieces(record, "chat", refusing)  # without --system it renders


def test_system_is_refused_outside_the_chat_template(pair, test_data, tmp_path):
    from instructgen.train.loop import RECIPES, trained_with

    vision, llm = map(str, pair)
    cfg = TrainConfig(stage=2, data=test_data / "train_instruct.json", images=test_data,
                      output=tmp_path, vision=vision, llm=llm, system="Be brief.")  # fmt: skip
    with pytest.raises(InputError, match="--system is the system message of --template chat"):
        trained_with(cfg, RECIPES[2])
