"""Calibration and evaluation data: loading (never unpickling), preprocessing, validation."""

from optim.data.loaders import Dataset, load_dataset, parse_data_arg
from optim.data.preprocess import model_inputs, validate_inputs

__all__ = ["Dataset", "load_dataset", "parse_data_arg", "model_inputs", "validate_inputs"]


def prepare(spec, preprocess, input_spec, samples=None, task=None):
    """Load a data spec, keep the first ``samples``, and return (inputs, labels, dataset).

    Image folders with COCO annotations and made scenes read or make only the first ``samples``
    (a COCO validation set letterboxed to 640 would otherwise fill gigabytes first). ``task``
    (default: classification) decides what labels the data holds and whether a flat image folder
    is letterboxed to the model input (``load_dataset``)."""
    if samples and spec.kind in ("coco", "scenes", "folder") and (spec.count is None or samples < spec.count):
        spec = spec.model_copy(update={"count": samples})
    ds = load_dataset(spec, tuple(input_spec.shape), task).head(samples)
    x = model_inputs(ds, preprocess, input_spec)  # validates: an error comes before any note
    ds.clamp_note(samples)
    return x, ds.labels, ds


def prepare_frames(spec, op, hwc, samples=None, task=None):
    """Raw uint8 frames (N, H, W, C) for a model with fused preprocessing, and the same frames
    preprocessed on the host by the op's reference arithmetic (what the FP32 model is fed):
    (frames, inputs, labels, dataset). ``task``: as for ``prepare``."""
    from optim.ops.preprocess import as_frames, reference

    ds = load_dataset(spec, (hwc[2], op.out_h, op.out_w), task).head(samples)
    frames = as_frames(ds.images, tuple(hwc), ds.source)
    ds.clamp_note(samples)
    return frames, reference(frames, op).astype("float32"), ds.labels, ds


__all__ += ["prepare", "prepare_frames"]
