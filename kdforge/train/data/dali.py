"""NVIDIA DALI as the training loader (`data.backend: dali`) for image folders and shards.

The training-input contract stays kdforge's: each epoch's batches, the crop box and the flip of
every sample are drawn from (seed, epoch, sample index) by kdforge.train.data.crops, exactly as
for the PyTorch loader, and handed to DALI with the encoded bytes through an external source. DALI
decodes only the box (`decoders.image_slice`: libjpeg-turbo's cropped decoding on the CPU, nvJPEG
on a GPU with the `mixed` backend), resizes it bilinearly without antialiasing and flips it. The
images come out as the PyTorch loader gives them: uint8 (N, 3, H, W) as a view of (N, H, W, 3),
on the GPU already when the run trains on one.

Differences from the PyTorch loader, so batches agree to rounding rather than bit for bit: DALI
decodes the box at full scale where kdforge's loader uses libjpeg-turbo's 1/2-1/8 DCT scaling
(boxes at least twice the output size), and its decoder and resampling are its own builds.
A file DALI cannot decode is decoded by the PyTorch path once, which names it.
The CPU pipeline is tested here (tests/test_dali.py); the GPU (`mixed`) pipeline only where a GPU
runs the `gpu`-marked tests.
"""

import numpy as np
import torch

from kdforge.errors import UserError


def _require_dali():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise UserError("data.backend: dali needs NVIDIA DALI; install it with pip install 'kdforge[dali]' "
                        "(the nvidia-dali-cuda120 wheel, which also runs on machines without a GPU).") from None


class DaliLoader:
    """Iterates the current epoch of `batches` (kdforge.train.trainer.EpochBatches) as (images,
    labels) decoded by DALI with `threads` CPU threads; on `device` when it is a GPU."""

    def __init__(self, dataset, batches, threads: int, device: torch.device):
        _require_dali()
        if not hasattr(dataset, "training_plan"):
            raise UserError("data.backend: dali reads encoded images: use it with data.name folder or webdataset.")
        self.dataset, self.batches, self.threads, self.device = dataset, batches, max(threads, 1), device

    def __len__(self):
        return len(self.batches)

    def _pipeline(self, source):
        import nvidia.dali as dali
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types

        gpu = self.device.type == "cuda"
        size = self.dataset.image_size

        @dali.pipeline_def(batch_size=self.batches.cfg.batch_size, num_threads=self.threads, prefetch_queue_depth=2,
                           device_id=(self.device.index or 0) if gpu else None, exec_dynamic=True)
        def pipeline():
            encoded, anchor, shape, flip, labels = fn.external_source(
                source=source, num_outputs=5, batch=True, dtype=[types.UINT8, types.INT32, types.INT32, types.INT32, types.INT64])
            images = fn.decoders.image_slice(encoded, anchor, shape, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                             normalized_anchor=False, normalized_shape=False, axis_names="WH")
            images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_LINEAR, antialias=False)
            return fn.flip(images, horizontal=flip), labels

        return pipeline()

    def _source(self):
        for batch in self.batches:
            planned = self.dataset.training_plan(batch)
            yield ([np.frombuffer(p.data, np.uint8) for p in planned],
                   [np.array(p.box[:2], np.int32) for p in planned],
                   [np.array([p.box[2] - p.box[0], p.box[3] - p.box[1]], np.int32) for p in planned],
                   [np.array(int(p.flip), np.int32) for p in planned],
                   [np.array(p.label, np.int64) for p in planned])

    def __iter__(self):
        from nvidia.dali.plugin.pytorch import feed_ndarray

        pipeline = self._pipeline(self._source())
        pipeline.build()
        for batch in self.batches:
            try:
                images, labels = pipeline.run()
            except StopIteration:
                return
            except RuntimeError as e:
                self.dataset.__getitems__(batch)  # the PyTorch path names a file it cannot decode either
                raise UserError(f"data.backend: dali could not decode a batch ({str(e).splitlines()[0]}); "
                                f"data.backend: torch decodes it.") from None
            if self.device.type == "cuda":
                images = images.as_tensor()
                x = feed_ndarray(images, torch.empty(images.shape(), dtype=torch.uint8, device=self.device),
                                 cuda_stream=torch.cuda.current_stream(self.device))
            else:
                x = torch.from_numpy(images.as_array())
            yield x.permute(0, 3, 1, 2), torch.from_numpy(labels.as_array())
