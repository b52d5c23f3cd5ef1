"""``optim run``: a recipe's stages, in order.

    run.py       the workflow: which stage gets which inputs and settings, through the executor
    sizes.py     the same entries at the recipe's other input sizes (``bench.sizes``)
    engines.py   engines whose builder needs no GPU (TensorRT-RTX), for every entry and size
"""
