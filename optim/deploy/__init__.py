"""Deployment outputs of a run folder: a Triton model repository (``optim deploy triton``).

    schema.py    Triton's own ModelConfig schema (tritonclient's model_config_pb2.py, loaded
                 alone), ONNX -> Triton data types, parsing a config.pbtxt (the validation)
    triton.py    what to deploy from a run folder (entries, engines, I/O, batch profile) and
                 each model's ModelConfig message; the repository's README

The stage that writes the repository is ``optim.stages.deploy``.
"""
