"""Batch buffers that loader workers reuse: shared memory without its page-fault cost.

A batch assembled in a worker process reaches the training process through shared memory. A new
shared segment per batch costs its pages on first write and again when freed: measured here,
107 us per 224-px image to allocate and fill (anonymous memory: 20) and 22 to free, a sixth of
the decoding work. So each worker keeps a few segments (slots) and decodes into a free one;
the training process marks a slot free in its first byte when it is done with the batch: the
training loop when it asks for the next batch (`Borrowed`; on a GPU as soon as the DataLoader's
pin thread has copied the batch into pinned memory, which it needs anyway), any other consumer
once it has copied the batch out (`copied`). A slot is reused only after that, so no batch a
consumer holds is overwritten; when every slot is busy a fresh segment is used. Outside a worker
process, buffers are ordinary memory.
"""

import math
from collections import namedtuple

import torch

HEADER = 64  # bytes before the images: byte 0 is 1 while the training process has not copied the batch out
PREFETCH = 4  # batches each worker prepares ahead (the DataLoader's prefetch_factor)
SLOTS = PREFETCH + 2  # and the one being decoded, and the one being copied out


class Slot:
    """A slot's header (its first byte: 1 while the training process still needs the batch).
    The DataLoader's pin thread pins a batch's tensors; a Slot passes through it unchanged."""

    def __init__(self, header: torch.Tensor):
        self.header = header

    def pin_memory(self, device=None):
        return self

    def release(self) -> None:
        self.header[0] = 0


SharedBatch = namedtuple("SharedBatch", "images labels slot")
SharedBatch.__doc__ = "A batch in a reusable slot: `Borrowed` lends it or `copied` copies it out, then its slot is released."

_slots: list[torch.UntypedStorage] = []


def batch_buffer(shape: tuple[int, ...]) -> tuple[torch.Tensor, Slot | None]:
    """A uint8 tensor of `shape` and, inside a loader worker, the slot it lives in (None where
    it is ordinary memory or a fresh segment)."""
    nbytes = math.prod(shape)
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8), None
    free = next((s for s in _slots if s.nbytes() == HEADER + nbytes and s[0] == 0), None)
    if free is None and len(_slots) < SLOTS:
        free = torch.UntypedStorage._new_shared(HEADER + nbytes)  # as torch's own collation allocates in workers
        _slots.append(free)
    if free is None:
        storage = torch.UntypedStorage._new_shared(nbytes)
        return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape), None
    free[0] = 1
    memory = torch.empty(0, dtype=torch.uint8).set_(free)
    return memory[HEADER:].view(shape), Slot(memory[:1])


def batch(images: torch.Tensor, labels: torch.Tensor, slot: Slot | None):
    """What a data set's `__getitems__` returns for a batch it assembled in `batch_buffer`'s memory."""
    return (images, labels) if slot is None else SharedBatch(images, labels, slot)


def relabelled(assembled, labels: torch.Tensor):
    """The same batch with other labels (a cross-task subset's)."""
    return batch(assembled[0], labels, assembled.slot if isinstance(assembled, SharedBatch) else None)


class Borrowed:
    """Iterates a DataLoader's batches for a consumer that is done with each batch when it asks
    for the next (the training loop, `data bench`): a slot's images are lent as they are and the
    slot released on the next request; on a GPU the DataLoader's pin thread has already copied
    them into pinned memory, so the slot is released at once. The slots' mappings are kept, so a
    reused slot arrives without new page faults."""

    def __init__(self, loader, pinned: bool):
        self.loader, self.pinned = loader, pinned
        self.mapped: dict[int, torch.Tensor] = {}

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        lent = None
        for item in self.loader:
            if lent is not None:
                lent.release()
                lent = None
            if isinstance(item, SharedBatch):
                self.mapped.setdefault(item.slot.header.untyped_storage().data_ptr(), item.slot.header)
                if self.pinned:
                    item.slot.release()
                else:
                    lent = item.slot
                item = (item.images, item.labels)
            yield item
        if lent is not None:
            lent.release()


def copied(item):
    """A batch from the loader that its consumer may keep: a slot's images copied out and the slot released."""
    if not isinstance(item, SharedBatch):
        return item
    images = item.images.clone()
    item.slot.release()
    return images, item.labels
