"""`train --dry-run`: the plan of a run from configs alone, checked against real models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="needs the [train] extra: make install-train")
pytest.importorskip("transformers", reason="needs the [train] extra: make install-train")

from train_tiny import write_config_only_towers  # noqa: E402

from instructgen.errors import InputError  # noqa: E402
from instructgen.train.data import LlavaDataset, read_records  # noqa: E402
from instructgen.train.loop import TrainConfig, train  # noqa: E402
from instructgen.train.model import (  # noqa: E402
    Towers,
    add_lora,
    build_model,
    load_image_processor,
    load_tokenizer,
    set_trainable,
    tokens_per_image,
)
from instructgen.train.plan import (  # noqa: E402
    LlmShape,
    Params,
    Setting,
    memory_per_gpu,
    plan_run,
)

pytestmark = pytest.mark.train
LLAMA_7B = 6_738_415_616  # LLaMA-7B's published parameter count (32K vocabulary)
CLIP_L_336 = 303_507_456  # CLIP ViT-L/14-336's vision tower


@pytest.fixture(scope="module")
def towers_7b(tmp_path_factory, test_data):
    root = tmp_path_factory.mktemp("towers7b")
    return write_config_only_towers(
        root, [test_data / "train_pretrain.json", test_data / "train_instruct.json"]
    )


def config(towers, test_data, tmp_path, stage=1, **kw) -> TrainConfig:
    vision, llm = map(str, towers)
    data = test_data / ("train_pretrain.json" if stage == 1 else "train_instruct.json")
    return TrainConfig(
        stage=stage,
        data=data,
        images=test_data / "train_images",
        output=tmp_path,
        vision=vision,
        llm=llm,
        **kw,
    )


def built_params(towers, stage: int, lora_rank: int = 0, freeze_llm: bool = False) -> Params:
    """Counts of the real model, built and set up as `train` does."""
    vision, llm = map(str, towers)
    model = build_model(Towers(vision, llm), load_tokenizer(llm))
    set_trainable(model, train_llm=stage == 2 and not lora_rank and not freeze_llm)
    if lora_rank:
        add_lora(model, lora_rank)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    total = count(model)
    vision_n = count(model.model.vision_tower)
    projector = count(model.model.multi_modal_projector)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Params(vision_n, projector, total - vision_n - projector, total, trainable)


@pytest.mark.parametrize(
    ("stage", "extra"),
    [(1, {}), (2, {}), (2, {"lora_rank": 4}), (2, {"freeze_llm": True})],
    ids=["stage1", "full-stage2", "lora-stage2", "frozen-llm-stage2"],
)
def test_dry_run_parameter_counts_equal_those_of_the_built_model(
    towers, test_data, tmp_path, stage, extra
):
    plan = plan_run(config(towers, test_data, tmp_path, stage, **extra))
    assert plan.params == built_params(towers, stage, **extra)


def test_planned_token_lengths_are_those_of_the_training_batches(towers, test_data, tmp_path):
    cfg = config(towers, test_data, tmp_path, stage=2, max_length=60)
    plan = plan_run(cfg)
    vision, llm = map(str, towers)
    tokenizer = load_tokenizer(llm)
    model = build_model(Towers(vision, llm), tokenizer)
    records = read_records(cfg.data, cfg.images)
    dataset = LlavaDataset(
        records,
        cfg.images,
        tokenizer,
        load_image_processor(vision),
        template="v1",
        image_token_id=model.config.image_token_index,
        tokens_per_image=tokens_per_image(model.config.vision_config),
        max_length=60,
        pad_to_square=False,
    )
    lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    assert plan.max_tokens == max(lengths) == 60  # some dialogues are cut
    assert plan.mean_tokens == round(sum(lengths) / len(lengths), 1)
    assert plan.tokens_per_step == round(32 * sum(lengths) / len(lengths))  # stage-2 batch 32


def test_steps_follow_records_batch_and_epochs(towers, test_data, tmp_path):
    # 20 captions, 4 per micro-batch on each of 2 GPUs: 3 steps of 8 per epoch
    cfg = config(towers, test_data, tmp_path, global_batch=8, micro_batch=4, epochs=2)
    plan = plan_run(cfg, gpus=2)
    assert (plan.accumulation, plan.steps) == (1, 6)


def test_a_7b_plan_from_config_only_folders_needs_no_weights(towers_7b, test_data, tmp_path):
    vision, llm = towers_7b
    args = ["train", "--stage", "2", "--data", str(test_data / "train_instruct.json")]
    args += ["--images", str(test_data / "train_images"), "-o", str(tmp_path)]
    args += ["--vision", str(vision), "--llm", str(llm), "--dry-run", "--gpus", "8"]
    args += ["--gpu-tflops", "989", "--mfu", "0.4"]
    # VmHWM is the peak of this process's own memory; ru_maxrss would count the pytest
    # process too, whose peak a child inherits through fork and exec.
    code = (
        "import re, sys\n"
        f"sys.argv = ['instructgen', *{args!r}]\n"
        "from instructgen.cli import main\n"
        "try:\n    main()\n"
        "finally:\n"
        "    status = open('/proc/self/status').read()\n"
        "    rss = re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)\n"
        "    print('maxrss_kb', rss, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "full stage 2, ZeRO-0 on 1x80 GB" in done.stderr, done.stderr
    rss_mb = int(done.stderr.split("maxrss_kb")[-1]) / 1024
    assert rss_mb < 1024  # the bf16 weights alone would be 14,000 MB
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["params"]["llm"] == LLAMA_7B
    assert plan["params"]["vision"] == CLIP_L_336
    assert plan["params"]["trainable"] == LLAMA_7B + 1024 * 4096 + 4096  # + linear_1
    assert set(plan["memory_gb"]) == {"zero0", "zero2", "zero3"}
    assert set(plan["memory_gb"]["zero3"]) == {
        "weights",
        "gradients",
        "optimizer",
        "activations",
        "total",
    }
    assert plan["image_tokens_per_sample"] == 576
    assert (plan["vision_family"], plan["projector"], plan["feature_layer"]) == (
        "clip",
        "linear",
        -2,
    )
    assert plan["gpu_hours"] == pytest.approx(8 * plan["hours"])
    verdict = {(f["setting"], f["zero"], f["gpus"]): f["fits"] for f in plan["fits"]}
    assert verdict[("full stage 2", 0, 1)] is False
    assert verdict[("full stage 2", 3, 8)] is True
    assert verdict[("LoRA r64 stage 2", 0, 1)] is True


def shape_7b() -> LlmShape:
    return LlmShape(hidden=4096, intermediate=11008, layers=32, kv_width=4096, vocab=32000)


def test_zero3_splits_weights_gradients_and_optimizer_over_the_gpus():
    params = Params(vision=0, projector=0, llm=8 * 10**9, total=8 * 10**9, trainable=8 * 10**9)
    full = Setting("full stage 2", train_llm=True)
    one = memory_per_gpu(params, full, shape_7b(), 3, 1, True, 1, 1, 512, True)
    eight = memory_per_gpu(params, full, shape_7b(), 3, 8, True, 1, 1, 512, True)
    # bf16 weights and gradients, fp32 master weights and two AdamW moments: 16 bytes each
    assert one.weights + one.gradients + one.optimizer == pytest.approx(16 * 8e9 / 2**30)
    assert eight.weights == pytest.approx(one.weights / 8)
    assert eight.optimizer == pytest.approx(one.optimizer / 8)
    assert eight.activations == one.activations


def test_gradient_checkpointing_keeps_one_layer_input_per_layer_instead_of_all_activations():
    params = Params(0, 0, 0, 0, 0)
    stage1 = Setting("stage 1")
    kept = memory_per_gpu(params, stage1, shape_7b(), 0, 1, True, 4, 1, 2048, True).activations
    full = memory_per_gpu(params, stage1, shape_7b(), 0, 1, True, 4, 1, 2048, False).activations
    assert 5 < full / kept < 30


def test_hours_need_both_gpu_tflops_and_mfu(towers, test_data, tmp_path):
    with pytest.raises(InputError, match="give both --gpu-tflops and --mfu"):
        plan_run(config(towers, test_data, tmp_path), gpu_tflops=989)


def test_a_gpu_of_no_speed_or_no_memory_is_an_error_not_negative_hours(towers, test_data, tmp_path):
    cfg = config(towers, test_data, tmp_path)
    with pytest.raises(InputError, match="--gpu-tflops must be more than 0"):
        plan_run(cfg, gpu_tflops=-989, mfu=0.4)
    with pytest.raises(InputError, match="--gpu-memory-gb must be more than 0"):
        plan_run(cfg, gpu_memory_gb=0)


@pytest.mark.parametrize("extra", [{"lora_rank": 4}, {"freeze_llm": True}], ids=["lora", "freeze"])
def test_stage_2_options_in_stage_1_are_refused_by_plan_and_trainer(
    towers, test_data, tmp_path, extra
):
    # stage 1 would otherwise wrap the LLM in adapters the plan does not count
    cfg = config(towers, test_data, tmp_path, stage=1, **extra)
    with pytest.raises(InputError, match="are stage-2 options"):
        plan_run(cfg)
    with pytest.raises(InputError, match="are stage-2 options"):
        train(cfg, echo=lambda _: None)
