"""The `export` command: LLaVA JSON -> a Hugging Face dataset folder or LLaMA-Factory files."""

from __future__ import annotations

from pathlib import Path

import typer

from instructgen.cli.app import app, console, taking_several_files
from instructgen.errors import InstructgenError


@app.command(cls=taking_several_files("--exclude"))
def export(
    data: Path = typer.Argument(
        ...,
        help="Any LLaVA-format JSON: a build's llava_instruct.json, review's accepted.json, "
        "pretrain.json, ScienceQA's converted JSON.",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Folder to create; it must not exist or be empty."
    ),
    images: Path | None = typer.Option(
        None,
        help="Folder the records' `image` paths are relative to (e.g. COCO train2017/); "
        "absolute `image` paths need none.",
    ),
    fmt: str = typer.Option(
        "hf",
        "--format",
        help="hf: a Hugging Face dataset folder that datasets.load_dataset(OUT) reads (parquet "
        "shards under OUT/data/ with the original image bytes, and a dataset card "
        "OUT/README.md). llamafactory: OUT/<name>.json in sharegpt form plus "
        "OUT/dataset_info.json; images are hard-linked (copied across file systems) under "
        "OUT/images/ and named relative to OUT, so set LLaMA-Factory's dataset_dir to OUT.",
    ),
    exclude: list[Path] = typer.Option(
        [],
        help="Evaluation files whose images are dropped (LLaVA question JSONL, POPE files, or "
        "one image name or id per line; COCO_val2014_000000441147.jpg, 000000441147.jpg and "
        "441147 are one image). Several files: --exclude A B, up to the next option.",
    ),
    val_fraction: float = typer.Option(
        0.0,
        min=0.0,
        max=0.5,
        help="Fraction of images whose records go to a validation split; an image's records "
        "are all on one side.",
    ),
    seed: int = typer.Option(0, help="Seed of the validation draw (same seed, same split)."),
    name: str | None = typer.Option(
        None, help="llamafactory: the dataset's name in dataset_info.json; default DATA's stem."
    ),
    requests: Path | None = typer.Option(
        None, help="hf card: requests.jsonl that made DATA (teacher models, image mode, prompts)."
    ),
    journal: Path | None = typer.Option(
        None, help="hf card: journal.sqlite of the run (models that answered, tokens, cost)."
    ),
    quarantine: Path | None = typer.Option(
        None,
        help="hf card: quarantine.jsonl to count; default: the count in stats.json beside DATA.",
    ),
    license_id: str = typer.Option(
        "cc-by-4.0",
        "--license",
        help="hf card: the license id in the YAML header (ScienceQA data: cc-by-nc-sa-4.0).",
    ),
    max_shard_mb: float = typer.Option(
        500.0, min=0.01, help="hf: size limit of one parquet shard (MiB)."
    ),
) -> None:
    """LLaVA JSON -> the formats other trainers read: a Hugging Face dataset folder (TRL's
    SFTTrainer, axolotl, the Hub) or LLaMA-Factory's sharegpt files.

    Every record is checked (turns alternate human/gpt and end with a non-empty gpt turn;
    `<image>` exactly once when the record has an image, never otherwise; the image file
    exists): bad input is one red line and no OUT is left behind. Records are streamed;
    memory stays flat.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from instructgen.curate.export import FORMATS
    from instructgen.curate.export import export as run_export
    from instructgen.generate.exclude import read_exclusions

    if fmt not in FORMATS:
        raise InstructgenError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    hf_only = {"--requests": requests, "--journal": journal, "--quarantine": quarantine}
    if fmt != "hf" and any(v is not None for v in hf_only.values()):
        given = ", ".join(k for k, v in hf_only.items() if v is not None)
        raise InstructgenError(f"{given}: for the dataset card of --format hf only")
    exclusions = read_exclusions(exclude) if exclude else None
    if fmt == "hf":
        from instructgen.curate.export_card import read_provenance
        from instructgen.curate.export_hf import HfWriter

        provenance = read_provenance(data, requests, journal, quarantine)

        def make_writer(folder: Path):
            return HfWriter(folder, provenance, license_id, str(output), max_shard_mb)
    else:
        from instructgen.curate.export_llamafactory import LlamaFactoryWriter

        def make_writer(folder: Path):
            return LlamaFactoryWriter(folder, name or data.stem)

    columns = (
        TextColumn("export"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[records]} records"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("export", total=None, records=0)
        counted = {"records": 0}

        def advance(read: int, total: int) -> None:
            counted["records"] += 1
            if counted["records"] % 256 == 0:
                progress.update(task, completed=read, total=total, records=counted["records"])

        s = run_export(data, output, make_writer, images, exclusions, val_fraction, seed, advance)
    for path, dropped in s.excluded.items():
        records = "record whose image is" if dropped == 1 else "records whose image is"
        console.print(f"excluded {dropped} {records} named in {path}")
    splits = ", ".join(f"{split} {n}" for split, n in sorted(s.rows.items()))
    mb = s.image_bytes / 1e6
    console.print(
        f"[green]wrote[/green] {output}: {sum(s.rows.values())} of {s.records} records "
        f"({splits or 'none'}; {s.images} with an image, {mb:.1f} MB of images): "
        + ", ".join(s.files)
    )
