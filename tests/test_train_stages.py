"""Trainer stages on tiny random towers: what trains, what is saved, what loads back."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra: make install-train")
pytest.importorskip("transformers", reason="needs the [train] extra: make install-train")

from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPVisionModel,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
)
from typer.testing import CliRunner  # noqa: E402

from instructgen.cli import app  # noqa: E402
from instructgen.errors import InputError  # noqa: E402
from instructgen.train.data import IGNORE, LlavaDataset, collate, read_records  # noqa: E402
from instructgen.train.export import TrainedWith, export_model  # noqa: E402
from instructgen.train.loop import TrainConfig, train  # noqa: E402
from instructgen.train.model import (  # noqa: E402
    Towers,
    build_model,
    load_image_processor,
    load_tokenizer,
    set_trainable,
    tokens_per_image,
)

pytestmark = pytest.mark.train
FAST = ["--no-gradient-checkpointing", "--workers", "0", "--log-every", "1", "--precision", "fp32"]


@pytest.fixture(scope="module")
def stage1(towers, test_data, tmp_path_factory):
    """Stage 1 run through the CLI, as a user would: 4 steps of 8 captions."""
    out = tmp_path_factory.mktemp("run") / "stage1"
    vision, llm = towers
    args = ["train", "--stage", "1", "--data", str(test_data / "train_pretrain.json")]
    args += ["--images", str(test_data / "train_images"), "--vision", str(vision)]
    args += ["--llm", str(llm), "-o", str(out), "--max-steps", "4", "--batch-size", "8"]
    result = CliRunner().invoke(app, [*args, "--micro-batch-size", "4", *FAST])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def stage2(stage1, test_data):
    """Stage 2 from the stage-1 projector, with gradient checkpointing on (the default)."""
    out = stage1.parent / "stage2"
    args = ["train", "--stage", "2", "--data", str(test_data / "train_instruct.json")]
    args += ["--images", str(test_data / "train_images"), "--projector", str(stage1)]
    args += ["-o", str(out), "--max-steps", "3", "--batch-size", "4", "--micro-batch-size", "2"]
    args += ["--workers", "0", "--log-every", "1", "--precision", "fp32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def assembled(towers, test_data, projector="linear"):
    """A fresh model and one batch of two instruction records."""
    torch.manual_seed(0)
    vision, llm = map(str, towers)
    tokenizer = load_tokenizer(llm)
    processor = load_image_processor(vision)
    model = build_model(Towers(vision, llm, projector), tokenizer)
    records = read_records(test_data / "train_instruct.json", test_data / "train_images")
    dataset = LlavaDataset(
        records[:2],
        test_data / "train_images",
        tokenizer,
        processor,
        template="v1",
        image_token_id=model.config.image_token_index,
        tokens_per_image=tokens_per_image(model.config.vision_config),
        max_length=2048,
        pad_to_square=False,
    )
    batch = collate([dataset[0], dataset[1]], pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer, processor, batch


def changed_after_steps(model, batch, steps=2, lr=1e-2) -> set[str]:
    """Names of the tensors that differ after `steps` optimizer steps on `batch`."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_stage1_writes_the_projector_its_settings_and_a_metrics_log(stage1):
    weights = load_file(stage1 / "projector.safetensors")
    assert set(weights) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
    settings = json.loads((stage1 / "instructgen_train.json").read_text())
    assert (settings["stage"], settings["template"], settings["projector"]) == (
        1,
        "plain",
        "linear",
    )
    log = [json.loads(line) for line in (stage1 / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    assert all(row["tokens_per_s"] > 0 and row["loss"] > 0 for row in log)


def test_stage1_trains_only_the_projector(towers, test_data):
    model, _, _, batch = assembled(towers, test_data)
    set_trainable(model, train_llm=False)
    changed = changed_after_steps(model, batch)
    assert changed == {
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_1.bias",
    }


def test_stage2_trains_projector_and_llm_but_not_the_vision_tower(towers, test_data):
    model, _, _, batch = assembled(towers, test_data, projector="mlp2x_gelu")
    set_trainable(model, train_llm=True)
    changed = changed_after_steps(model, batch)
    assert not any(k.startswith("model.vision_tower.") for k in changed)
    assert "model.multi_modal_projector.linear_2.weight" in changed
    assert "model.language_model.layers.0.self_attn.q_proj.weight" in changed
    assert "lm_head.weight" in changed


def test_loss_goes_down_on_a_repeated_batch(towers, test_data):
    model, _, _, batch = assembled(towers, test_data)
    set_trainable(model, train_llm=True)
    first = model(**batch).loss.item()
    changed_after_steps(model, batch, steps=20, lr=1e-2)
    assert model(**batch).loss.item() < 0.5 * first


def test_loss_is_the_mean_over_assistant_tokens_only(towers, test_data):
    model, _, _, batch = assembled(towers, test_data)
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]  # token t predicts t + 1
    keep = labels != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert keep.sum() < batch["attention_mask"].sum() / 2  # image and prompt tokens are masked


def test_export_loads_back_with_transformers_and_gives_the_same_logits(towers, test_data, tmp_path):
    model, tokenizer, processor, batch = assembled(towers, test_data, projector="mlp2x_gelu")
    set_trainable(model, train_llm=True)
    changed_after_steps(model, batch, steps=1)
    meta = TrainedWith(2, "v", "l", "mlp2x_gelu", -2, "v1", False)
    export_model(model, tokenizer, processor, tmp_path, meta)
    loaded = LlavaForConditionalGeneration.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, loaded.eval()(**batch).logits)


def test_stage2_export_changed_projector_and_llm_and_kept_the_vision_tower(stage1, stage2, towers):
    vision, llm = towers
    loaded = LlavaForConditionalGeneration.from_pretrained(stage2)
    source_vision = CLIPVisionModel.from_pretrained(vision).state_dict()
    for name, tensor in loaded.model.vision_tower.state_dict().items():
        assert torch.equal(tensor, source_vision[name]), name
    source_llm = LlamaForCausalLM.from_pretrained(llm).model.layers[0].mlp.up_proj.weight
    assert not torch.equal(loaded.model.language_model.layers[0].mlp.up_proj.weight, source_llm)
    before = load_file(stage1 / "projector.safetensors")["linear_1.weight"]
    assert not torch.equal(loaded.model.multi_modal_projector.linear_1.weight, before)
    # the paper's linear projector: the second layer is still the identity
    eye = torch.eye(loaded.config.text_config.hidden_size)
    assert torch.equal(loaded.model.multi_modal_projector.linear_2.weight, eye)


def test_chat_answers_a_question_about_an_image(stage2, test_data):
    image = test_data / "train_images" / "000000183872.jpg"
    args = ["chat", "--model", str(stage2), "--image", str(image), "--max-new-tokens", "5"]
    result = CliRunner().invoke(app, [*args, "What does the picture show?"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()


def test_lora_stage2_exports_a_plain_merged_checkpoint(stage1, towers, test_data):
    out = stage1.parent / "lora"
    args = ["train", "--stage", "2", "--data", str(test_data / "train_instruct.json")]
    args += ["--images", str(test_data / "train_images"), "--projector", str(stage1)]
    args += ["-o", str(out), "--max-steps", "2", "--batch-size", "2", "--micro-batch-size", "2"]
    result = CliRunner().invoke(app, [*args, "--lora-rank", "4", "--lr", "1e-2", *FAST])
    assert result.exit_code == 0, result.output
    loaded = LlavaForConditionalGeneration.from_pretrained(out)
    source = LlamaForCausalLM.from_pretrained(towers[1]).model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(loaded.model.language_model.layers[0].self_attn.q_proj.weight, source)
    assert not any("lora" in name for name in loaded.state_dict())


def test_stage2_without_a_projector_or_towers_is_a_clear_error(test_data, tmp_path):
    args = ["train", "--stage", "2", "--data", str(test_data / "train_instruct.json")]
    result = CliRunner().invoke(app, [*args, "--images", str(test_data), "-o", str(tmp_path)])
    assert isinstance(result.exception, InputError)
    assert "--vision MODEL and --llm MODEL" in str(result.exception)
    assert "or --projector DIR" in str(result.exception)


def test_stage2_without_a_projector_starts_fresh_with_the_feature_layer_asked(
    towers, test_data, tmp_path
):
    """The paper's no-pretraining ablation, with the last vision layer's features."""
    vision, llm = map(str, towers)
    args = ["train", "--stage", "2", "--data", str(test_data / "train_instruct.json")]
    args += ["--images", str(test_data / "train_images"), "--vision", vision, "--llm", llm]
    args += ["-o", str(tmp_path), "--max-steps", "1", "--batch-size", "2"]
    args += ["--micro-batch-size", "2", "--feature-layer", "-1", *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "instructgen_train.json").read_text())
    assert (meta["stage"], meta["feature_layer"]) == (2, -1)
    assert LlavaForConditionalGeneration.from_pretrained(tmp_path).config.vision_feature_layer == -1


def run_config(towers, test_data, out, **kw) -> TrainConfig:
    """A run as the resume tests make it: a checkpoint every step, `--resume` always on."""
    vision, llm = map(str, towers)
    settings = dict(
        stage=1,
        data=test_data / "train_pretrain.json",
        images=test_data / "train_images",
        output=out,
        vision=vision,
        llm=llm,
        max_steps=3,
        global_batch=8,
        micro_batch=4,
        gradient_checkpointing=False,
        precision="fp32",
        save_every=1,
        resume=True,
        workers=0,
        log_every=1,
    )
    return TrainConfig(**{**settings, **kw})


def crash_after(whole, crashed, step: int) -> None:
    """What a crash after `step` leaves: that step's checkpoint and the whole log so far."""
    shutil.copytree(whole / f"checkpoint-{step}", crashed / f"checkpoint-{step}")
    shutil.copy(whole / "train_log.jsonl", crashed / "train_log.jsonl")


def curve(out) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["epoch"], r["loss"], r["lr"], r["grad_norm"]) for r in rows]


def checkpoint_tensors(out) -> dict:
    [checkpoint] = out.glob("checkpoint-*")
    assert not list(checkpoint.glob("model*")) and not list(checkpoint.glob("pytorch_model*"))
    return load_file(checkpoint / "trained.safetensors")


@pytest.fixture(scope="module")
def checkpointed(towers, test_data, tmp_path_factory):
    """A 2-step stage-1 run that left its step-1 checkpoint."""
    out = tmp_path_factory.mktemp("checkpointed") / "run"
    train(run_config(towers, test_data, out, max_steps=2), echo=lambda _: None)
    return out


def test_stage1_checkpoints_hold_the_projector_and_no_frozen_weight(checkpointed, towers):
    out = checkpointed
    assert set(checkpoint_tensors(out)) == {
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_1.bias",
    }
    settings = json.loads((out / "checkpoint-1" / "instructgen_train.json").read_text())
    assert (settings["vision"], settings["llm"]) == tuple(map(str, towers))


def test_lora_checkpoints_hold_adapters_and_projector_only(stage1, towers, test_data, tmp_path):
    out = tmp_path / "lora"
    cfg = run_config(
        towers, test_data, out, stage=2, data=test_data / "train_instruct.json",
        projector_from=stage1, lora_rank=4, global_batch=2, micro_batch=2, max_steps=2,
    )  # fmt: skip
    train(cfg, echo=lambda _: None)
    names = set(checkpoint_tensors(out))
    assert all("lora_" in n or n.startswith("model.multi_modal_projector.") for n in names)
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    frozen_bytes = (towers[1] / "model.safetensors").stat().st_size
    assert (out / "checkpoint-1" / "trained.safetensors").stat().st_size < frozen_bytes / 4


def test_a_resumed_run_repeats_the_uninterrupted_loss_curve_step_for_step(
    stage1, towers, test_data, tmp_path
):
    # LoRA stage 2 over several epochs: data order, dropout RNG and the warmup-cosine lr all
    # have to come back exactly for the curves to agree.
    def cfg(out):
        return run_config(
            towers, test_data, out, stage=2, data=test_data / "train_instruct.json",
            projector_from=stage1, lora_rank=4, lr=1e-2, warmup_ratio=0.3, max_steps=8,
            global_batch=4, micro_batch=2, save_every=5,
        )  # fmt: skip

    train(cfg(tmp_path / "whole"), echo=lambda _: None)
    crash_after(tmp_path / "whole", tmp_path / "crashed", 5)
    train(cfg(tmp_path / "crashed"), echo=lambda _: None)
    whole, resumed = curve(tmp_path / "whole"), curve(tmp_path / "crashed")
    assert [row[:2] for row in resumed] == [row[:2] for row in whole]
    for a, b in zip(whole, resumed, strict=True):
        assert a[2:] == pytest.approx(b[2:], rel=1e-5), a[0]
    a = LlavaForConditionalGeneration.from_pretrained(tmp_path / "whole").state_dict()
    b = LlavaForConditionalGeneration.from_pretrained(tmp_path / "crashed").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_with_other_towers_is_a_clear_error(checkpointed, towers, test_data, tmp_path):
    moved = tmp_path / "llm-copy"
    shutil.copytree(towers[1], moved)
    cfg = run_config(towers, test_data, checkpointed, llm=str(moved))
    with pytest.raises(InputError, match=r"checkpoint-1: trained with .* resume with the same"):
        train(cfg, echo=lambda _: None)


def test_resume_with_another_batch_size_is_a_clear_error_not_a_shifted_data_order(
    checkpointed, towers, test_data
):
    cfg = run_config(towers, test_data, checkpointed, global_batch=4)
    with pytest.raises(InputError, match=r"checkpoint-1: this run changes global_batch 8 -> 4"):
        train(cfg, echo=lambda _: None)


def test_checkpoint_rotation_leaves_a_users_copy_of_a_checkpoint_alone(
    checkpointed, towers, test_data, tmp_path
):
    out = tmp_path / "run"
    shutil.copytree(checkpointed / "checkpoint-1", out / "checkpoint-1.bak")  # a user's backup
    train(run_config(towers, test_data, out, max_steps=3), echo=lambda _: None)
    assert [p.name for p in out.glob("checkpoint-*[0-9]")] == ["checkpoint-2"]
    assert (out / "checkpoint-1.bak" / "trained.safetensors").is_file()


def test_v1_export_processor_lays_the_prompt_out_as_training_did(stage2, test_data):
    """The exported LlavaProcessor of a CLIP + v1 model: our v1 layout as its chat template,
    16 image tokens (17 CLIP tokens, CLS dropped), the ids `answer` prompts with."""
    from PIL import Image
    from transformers import AutoProcessor

    from instructgen.eval.generate import load_answerer, prompt_ids
    from instructgen.train.data import V1_SYSTEM

    processor = AutoProcessor.from_pretrained(stage2)
    messages = [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What does the picture show?"}]}]  # fmt: skip
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == f"{V1_SYSTEM} USER: <image>\nWhat does the picture show? ASSISTANT:"
    image = Image.open(test_data / "train_images" / "000000183872.jpg")
    ids = processor(images=image, text=prompt, return_tensors="pt")["input_ids"][0].tolist()
    answerer = load_answerer(stage2, torch.float32, "cpu")
    ours = prompt_ids(answerer, "What does the picture show?", has_image=True)
    # the test tokenizer has no post-processor: a real Llama tokenizer adds the bos we add
    assert [processor.tokenizer.bos_token_id, *ids] == ours
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 16
