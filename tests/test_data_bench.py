"""bench/data_scale.py runs end to end at a tiny size (the 5M-review figures come from the script)."""
import json

from conftest import load_bench


def test_data_scale_bench_at_a_tiny_size(tmp_path, capsys):
    bench = load_bench("data_scale")
    figures = bench.main(["--reviews", "20000", "--dir", str(tmp_path), "--date-window", "2019-01-01:2023-12-31"])
    assert figures["exit_code"] == 0 and figures["samples"]["train"] > 0 and figures["items"] > 0
    assert figures["timestamps"]["unit"] == "milliseconds" and figures["timestamps"]["window"] == ["2019-01-01",
                                                                                                   "2023-12-31"]
    assert 0 < figures["stage_peak_rss_gb"] < 4 and figures["stage_wall_s"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures  # ends with one JSON line
