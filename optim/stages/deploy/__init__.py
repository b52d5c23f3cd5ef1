"""Deployment outputs of a run folder (``optim deploy triton``, ``optim deploy rtx``).

    stage.py     the stage: writes a Triton model repository, whole or not at all
    triton.py    what goes in (entries, engines, I/O, batch profile) and each ModelConfig message
    schema.py    Triton's own ModelConfig schema, ONNX -> Triton data types, config.pbtxt parsing
    readme.py    the repository's README
    rtx.py       the TensorRT-RTX engines of a run, copied out with their manifests
    publish.py   building an output folder beside its place and swapping it in
"""
