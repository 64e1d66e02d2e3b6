"""The Hugging Face writer: parquet shards under OUT/data/ and the dataset card OUT/README.md.

`datasets.load_dataset(OUT, split="train")` reads the folder as it is. The Arrow schema and
the Hub metadata come from `datasets.Features` (`FEATURES`), never written by hand. Images
are the original file bytes (`{"bytes": ..., "path": name}`), never decoded. Rows are read
and written in batches of one parquet row group: the image files of a batch are read by a
few threads at once, so memory holds one batch, whatever the dataset's size. A shard is
closed before it would pass the size limit; its final name
`data/<split>-00000-of-0000N.parquet` is given when N is known.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, SplitInfo, Value
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict
from huggingface_hub import DatasetCardData

from instructgen.curate.export import TRAIN, VALIDATION, ExportRecord, ExportSummary, message_parts
from instructgen.curate.export_card import Provenance, render_card

FEATURES = Features(
    {
        "id": Value("string"),
        "images": List(Image()),
        "messages": List(
            {
                "role": Value("string"),
                "content": List({"type": Value("string"), "text": Value("string")}),
            }
        ),
    }
)
# Rows per row group: small groups let the Hub viewer and readers fetch a few images at once
# (datasets wrote image data in groups of 100 rows before it moved to byte-sized groups).
ROWS_PER_GROUP = 100
READ_THREADS = 8  # image files read at once: enough to keep a disk or network mount busy
DEFAULT_SHARD_MB = 500  # the Hub's default (push_to_hub's max_shard_size)


def hf_row(record: ExportRecord, image: bytes | None) -> dict:
    """One row of the parquet shards: id, images (original bytes), typed messages."""
    return {
        "id": record.id,
        "images": [] if image is None else [{"bytes": image, "path": record.image}],
        "messages": [{"role": m.role, "content": message_parts(m.text)} for m in record.messages],
    }


class _SplitShards:
    """The shards of one split: rows go into the open shard until the next would overflow."""

    def __init__(self, folder: Path, split: str, max_bytes: int) -> None:
        self.folder, self.split, self.max_bytes = folder, split, max_bytes
        self.paths: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.shard_bytes = 0
        self.arrow_bytes = 0  # in-memory Arrow size of all rows: the card's num_bytes

    def write(self, rows: list[dict], sizes: list[int]) -> None:
        """Write rows (their sizes in bytes: image + text) as row groups, opening shards."""
        start = 0
        for n, size in enumerate(sizes):
            if self.shard_bytes and self.shard_bytes + size > self.max_bytes:
                self._write_group(rows[start:n])
                self.close()
                start = n
            self.shard_bytes += size
        self._write_group(rows[start:])

    def _write_group(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self.writer is None:
            path = self.folder / f"{self.split}-{len(self.paths):05d}.parquet"
            self.writer = pq.ParquetWriter(path, FEATURES.arrow_schema)
            self.paths.append(path)
        table = pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema)
        self.arrow_bytes += table.nbytes
        self.writer.write_table(table)

    def close(self) -> None:
        """Close the open shard, if any; the next row starts a new one."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.shard_bytes = 0

    def finish(self) -> list[str]:
        """Close the last shard; rename all to `<split>-0000k-of-0000N.parquet`."""
        self.close()
        names = []
        for k, path in enumerate(self.paths):
            name = f"{self.split}-{k:05d}-of-{len(self.paths):05d}.parquet"
            path.rename(path.with_name(name))
            names.append(f"data/{name}")
        return names


def _read_image(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


class HfWriter:
    """Writes an export as a Hugging Face dataset folder (see the module doc)."""

    def __init__(
        self,
        folder: Path,
        provenance: Provenance,
        license_id: str,
        location: str,
        max_shard_mb: float = DEFAULT_SHARD_MB,
    ) -> None:
        self.folder = Path(folder)
        (self.folder / "data").mkdir()
        self.provenance, self.license_id, self.location = provenance, license_id, location
        max_bytes = int(max_shard_mb * 1024 * 1024)
        self.splits = {
            s: _SplitShards(self.folder / "data", s, max_bytes) for s in (TRAIN, VALIDATION)
        }
        self.pending: dict[str, list[tuple[ExportRecord, Path | None]]] = {
            s: [] for s in self.splits
        }
        self.pool = ThreadPoolExecutor(READ_THREADS)
        self.image_bytes = 0

    def add(self, split: str, record: ExportRecord, image_path: Path | None) -> None:
        pending = self.pending[split]
        pending.append((record, image_path))
        if len(pending) >= ROWS_PER_GROUP:
            self._flush(split)

    def _flush(self, split: str) -> None:
        batch, self.pending[split] = self.pending[split], []
        images = self.pool.map(_read_image, (path for _, path in batch))
        rows, sizes = [], []
        for (record, _), image in zip(batch, images, strict=True):
            rows.append(hf_row(record, image))
            text = sum(len(m.text) for m in record.messages)
            sizes.append(text + (len(image) if image else 0))
            self.image_bytes += len(image) if image else 0
        self.splits[split].write(rows, sizes)

    def finish(self, summary: ExportSummary) -> None:
        for split in self.splits:
            self._flush(split)
        summary.image_bytes = self.image_bytes
        written = [s for s in self.splits if summary.rows[s]]
        infos = SplitDict()
        for split in written:
            summary.files += self.splits[split].finish()
            infos.add(SplitInfo(split, self.splits[split].arrow_bytes, summary.rows[split]))
        card_data = DatasetCardData()
        info = DatasetInfo(
            features=FEATURES, splits=infos, dataset_size=sum(s.num_bytes for s in infos.values())
        )
        DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
        dataset_info = card_data.to_dict()["dataset_info"]
        card = render_card(
            summary, self.provenance, self.license_id, written, dataset_info, self.location
        )
        (self.folder / "README.md").write_text(card, encoding="utf-8")
        summary.files.append("README.md")

    def close(self) -> None:
        self.pool.shutdown()
        for shards in self.splits.values():
            shards.close()
