"""What the CLI's commands read and write, as users' files and shells hand it to them."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from gateway.explain import read_traffic
from gateway.router.training.data import iter_rows, load_data


def test_a_jsonl_file_that_opens_with_a_byte_order_mark_is_read_as_the_same_rows(tmp_path: Path) -> None:
    """Notepad and PowerShell's `Out-File -Encoding utf8` open a UTF-8 file with a BOM: `route --batch`,
    `train`, `router evaluate` and `policy calibrate` refused its first line as "not JSON"."""
    rows = [{"id": f"r{i}", "prompt": f"What is {i} + {i}?", "split": "train",
             "models": {"a": {"score": 1.0, "cost_usd": 0.1}}} for i in range(3)]
    data = tmp_path / "rows.jsonl"
    data.write_bytes(codecs.BOM_UTF8 + "".join(json.dumps(r) + "\r\n" for r in rows).encode())
    assert [r["id"] for r in iter_rows(data)] == ["r0", "r1", "r2"]
    assert load_data(data).ids == ["r0", "r1", "r2"]
    assert len(read_traffic(data)) == 3


def test_route_batch_to_a_symlink_replaces_the_file_it_names(tmp_path: Path) -> None:
    from gateway.router.batch import score_file

    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"id": "q", "prompt": "hi"}) + "\n")
    (tmp_path / "real.jsonl").write_text("old\n")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    assert score_file(data, tmp_path / "link.jsonl", progress=False) == 1
    assert (tmp_path / "link.jsonl").is_symlink()
    assert json.loads((tmp_path / "real.jsonl").read_text())["id"] == "q"
