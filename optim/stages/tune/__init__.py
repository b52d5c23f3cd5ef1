"""Accuracy-aware tuning of a Q/DQ model, with the graph helpers it uses.

    stage.py        the stage: rank quantized nodes, take the most sensitive back under a budget
    sensitivity.py  per-node sensitivity, scored on a CPU backend
    budget.py       the fewest nodes taken back to meet an accuracy budget
    edit.py         Q/DQ graph edits (remove a node's Q/DQ, pack and unpack weights)
"""
