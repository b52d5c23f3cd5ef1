"""Calibration and evaluation data: loading (never unpickling), preprocessing, validation."""

from optim.data.loaders import Dataset, load_dataset, parse_data_arg
from optim.data.preprocess import model_inputs, validate_inputs

__all__ = ["Dataset", "load_dataset", "parse_data_arg", "model_inputs", "validate_inputs"]


def prepare(spec, preprocess, input_spec, samples=None):
    """Load a data spec, keep the first ``samples``, and return (inputs, labels, dataset)."""
    ds = load_dataset(spec, tuple(input_spec.shape)).head(samples)
    return model_inputs(ds, preprocess, input_spec), ds.labels, ds


__all__.append("prepare")
