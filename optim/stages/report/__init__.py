"""The report: one accuracy-vs-speed table per run folder.

    stage.py     the stage: reads the run folder's results, writes report.{md,html,json,png}
    html.py      report.html
    plot.py      report.png (accuracy against latency)
    sizes.py     the table at the other input sizes
    tuning.py    the tuning section (sensitivity, what a budget took back)
"""
