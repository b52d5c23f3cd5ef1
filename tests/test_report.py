"""Report stage on a run folder written by hand."""

from __future__ import annotations

import json

import pytest

from optim.errors import InputError
from optim.stages.report.stage import NOT_RUN, collect, write_report
from tests.helpers.runs import bench_record as _bench, check_record as _check, write_json as _write


def test_collect_rows(run_dir):
    run, rows = collect(run_dir)
    by = {r.tag: r for r in rows}
    assert [r.precision for r in rows] == ["fp32", "bf16", "int8"]
    assert by["int8-tensorrt"].coverage == "9/10"
    assert by["int8-tensorrt"].speedup_vs_fp32 == pytest.approx(0.5)
    assert by["int8-tensorrt"].gates.startswith("FAILED")
    assert by["fp32"].p99_ms == 2.0 and by["fp32"].throughput == pytest.approx(1280.0)
    assert by["bf16"].throughput is None and "no BF16 kernels" in by["bf16"].timing_method
    assert by["fp32"].size_bytes == 2048


def test_write_report_all_formats(run_dir):
    paths = write_report(run_dir)
    assert set(paths) == {"md", "html", "json", "png"}
    md = paths["md"].read_text()
    assert "| int8 | tensorrt | 89.50 | -0.50 |" in md
    assert NOT_RUN in md and "no BF16 kernels" in md and "TensorRT build: not run" in md
    data = json.loads(paths["json"].read_text())
    assert [r["tag"] for r in data["rows"]] == ["fp32", "bf16", "int8-tensorrt"]
    assert data["rows"][1]["throughput"] is None
    assert "<table>" in paths["html"].read_text() and "class='fail'" in paths["html"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob(".*partial*"))


def test_untrained_weights_are_flagged(run_dir):
    run = json.loads((run_dir / "run.json").read_text())
    run.update(accuracy_meaningful=False, accuracy_reason="random weights")
    (run_dir / "run.json").write_text(json.dumps(run))
    paths = write_report(run_dir)
    assert "ACCURACY COLUMNS ARE NOT MEANINGFUL: random weights" in paths["md"].read_text()
    assert json.loads(paths["json"].read_text())["accuracy_meaningful"] is False


def test_unlabelled_data_says_no_labels(run_dir):
    for t in ("fp32", "int8-tensorrt", "bf16"):
        p = run_dir / f"check/{t}.json"
        d = json.loads(p.read_text())
        d["accuracy"] = None
        p.write_text(json.dumps(d))
    md = write_report(run_dir)["md"].read_text()
    assert "| fp32 | reference | no labels | no labels | no labels | 1.00000 |" in md


def test_empty_or_missing_run_dir(tmp_path):
    with pytest.raises(InputError, match="not found"):
        collect(tmp_path / "nope")
    with pytest.raises(InputError, match="no optim results"):
        collect(tmp_path)


def test_html_has_real_tables_and_every_linked_file_exists(run_dir):
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.refs, self.rows = 0, [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.tables += tag == "table"
            self.refs += [a[k] for k in ("src", "href") if k in a]
            if tag == "tr":
                self.rows.append(a.get("class"))

    paths = write_report(run_dir)
    parser = Links()
    parser.feed(paths["html"].read_text())
    assert parser.tables >= 1 and "<pre>" not in paths["html"].read_text()
    assert "report.png" in parser.refs and all((run_dir / r).is_file() for r in parser.refs)
    assert parser.rows.count("fail") == 1  # the int8 row, whose gate failed
    assert "![accuracy change vs speed-up" in paths["md"].read_text()  # the Markdown links it too


def test_console_summary_fits_100_columns(run_dir):
    from optim.stages.report.stage import summary_lines

    lines = summary_lines(*collect(run_dir))
    assert lines[0].split()[:2] == ["entry", "Δ"] and len(lines) == 4
    assert all(len(ln) <= 100 for ln in lines)
    int8 = next(ln for ln in lines if ln.startswith("int8-tensorrt"))
    assert "-0.50" in int8 and "0.50" in int8.split()[2] and "FAILED" in int8


def test_plot_lists_entries_it_cannot_place(run_dir):
    from optim.stages.report.plot import panels
    from optim.tasks import get_task

    _, rows = collect(run_dir)
    (cpu,), label = panels(get_task("classification"), rows)
    assert set(cpu.points) == {"fp32", "int8-tensorrt"} and cpu.points["fp32"] == (1.0, 0.0)
    assert "no BF16 kernels" in cpu.missing["bf16"] and label.startswith("Δ top-1")


def test_a_row_per_cpu_backend_and_the_fastest_marked(run_dir):
    """Two CPU backends: a row per (entry, backend), × fp32 against ONNX Runtime FP32, ★ on the fastest
    row of each precision that passed its gates, and a backend that could not run a file says why."""
    from optim.stages.report.stage import summary_lines, table_rows, task_of

    run = json.loads((run_dir / "run.json").read_text())
    run.update(backends=["onnxruntime", "openvino"], cpu_not_run={"bf16@openvino": "OpenVINO cannot load it"})
    (run_dir / "run.json").write_text(json.dumps(run))
    _write(run_dir / "check/fp32@openvino.json", _check("fp32", 90.0, 0.0, 1.0))
    _write(run_dir / "bench/fp32@openvino.json", _bench("fp32", 0.5, 25.0))  # 2x ORT fp32
    ov_int8 = _check("int8-tensorrt", 89.9, -0.1, 0.999)
    ov_int8["candidate"] = "model.int8-tensorrt.onnx"
    _write(run_dir / "check/int8-tensorrt@openvino.json", ov_int8)
    _write(run_dir / "bench/int8-tensorrt@openvino.json", _bench("int8-tensorrt", 0.25, 10.0))  # 5x
    run, rows = collect(run_dir)
    by = {(r.tag, r.backend): r for r in rows}
    assert len(rows) == 6 and [r.backend for r in rows[:2]] == ["onnxruntime", "openvino"]
    assert by[("fp32", "openvino")].speedup_vs_fp32 == pytest.approx(2.0)
    assert by[("int8-tensorrt", "openvino")].speedup_vs_fp32 == pytest.approx(5.0)
    assert by[("fp32", "openvino")].fastest and not by[("fp32", "onnxruntime")].fastest
    # the ORT int8 row failed its gate: the OpenVINO one is the fastest correct int8 row
    assert by[("int8-tensorrt", "openvino")].fastest and not by[("int8-tensorrt", "onnxruntime")].fastest
    assert by[("bf16", "openvino")].timing_method == "not run: OpenVINO cannot load it"
    head, body = table_rows(task_of(run), rows)
    assert head[:3] == ["precision", "target", "backend"] and "× ORT fp32" in head
    ov = body[[r.backend for r in rows].index("openvino")]
    assert ov[2] == "openvino ★" and ov[head.index("GPU top-1 %")] == ""  # GPU columns: the entry's first row
    lines = summary_lines(run, rows)
    assert any(ln.startswith("int8-tensorrt@openvino ★") for ln in lines) and all(len(ln) <= 100 for ln in lines)
    paths = write_report(run_dir)
    assert "| int8 | tensorrt | openvino ★ | 89.90 | -0.10 |" in paths["md"].read_text()
