"""How records are grouped into micro-batches: shuffled, or by modality and length.

Length grouping (LLaVA's `group_by_modality_length`, written anew): records with an image and
text-only records never share a batch, and a batch holds records of similar length, so little
of it is padding. Which records meet is still random: records are shuffled, then sorted by
length only within windows of `WINDOW_BATCHES` batches, and the batches are shuffled again.
The order is a function of the seed and the epoch alone, so a resumed run that skips the
batches it had consumed sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from instructgen.contracts import IMAGE_TOKEN
from instructgen.train.data import TrainRecord

WINDOW_BATCHES = 32  # batches of records sorted by length together: more, less padding


def record_length(record: TrainRecord, tokens_per_image: int) -> int:
    """A cheap length estimate, tokens: words of the turns plus the image tokens (grouping
    needs the order of lengths, not exact counts, and must not tokenize 600K records first)."""
    words = sum(len(turn.text.replace(IMAGE_TOKEN, " ").split()) for turn in record.turns)
    return words + tokens_per_image * len(record.images)


class LengthGroupedBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of record indices of one modality and similar length; `set_epoch` picks the
    epoch's order. The batch with the longest record comes first, so a run that does not fit
    in memory fails at its first step, not hours in."""

    # Read by accelerate when it shards the batches over devices: keep every batch, and a
    # batch_size of None says that batches vary in size (each modality's last one is short).
    drop_last = False
    batch_size = None

    def __init__(
        self, lengths: Sequence[int], has_image: Sequence[bool], batch_size: int, seed: int
    ):
        self.lengths = list(lengths)
        self.has_image = list(has_image)
        self.size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        images = sum(self.has_image)
        texts = len(self.has_image) - images
        return math.ceil(images / self.size) + math.ceil(texts / self.size)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch))

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches of `epoch`, in the order they are trained."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        batches: list[list[int]] = []
        for modality in (True, False):
            members = [i for i, image in enumerate(self.has_image) if image == modality]
            order = [members[k] for k in torch.randperm(len(members), generator=generator)]
            window = WINDOW_BATCHES * self.size
            for start in range(0, len(order), window):
                chunk = sorted(order[start : start + window], key=lambda i: -self.lengths[i])
                batches += [chunk[k : k + self.size] for k in range(0, len(chunk), self.size)]
        batches = [batches[k] for k in torch.randperm(len(batches), generator=generator)]
        longest = max(
            range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]), default=0
        )
        if batches:
            batches[0], batches[longest] = batches[longest], batches[0]
        return batches


def grouped_batches_per_epoch(has_image: Sequence[bool], batch_size: int) -> int:
    """Micro-batches of one epoch under length grouping (each modality ends in a short one)."""
    return len(LengthGroupedBatches([0] * len(has_image), has_image, batch_size, 0))
