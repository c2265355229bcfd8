"""The benchmark result file (metarl/app/bench/result.py): every committed result, and every
committed aggregate the report wrote, reads back and writes back unchanged, `metarl bench report`
rebuilds the committed README from them, and a file that is not a result (or not an aggregate) is
refused in one line naming the file and the field."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import shutil
from pathlib import Path

import pytest

from metarl.app.bench.result import Aggregate, MetaworldSummary, Result, ResultFileError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _committed_results() -> list[Path]:
    """The per-seed result files in benchmarks/results/ and the parked runs' results/ (not the
    aggregates the report writes, nor other benchmarks' outputs)."""
    out = []
    for path in sorted([*RESULTS.glob("*.json"), *(ROOT / "benchmarks" / "inflight").glob("*/results/*.json")]):
        if "." in path.name[:-len(".json")]:
            continue
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "per_seed" in data and "preset" in data and "meta_train" not in data:
            out.append(path)
    return out


def test_every_committed_result_reads_back_and_writes_back_unchanged():
    paths = _committed_results()
    assert len(paths) >= 25
    for path in paths:
        result = Result.from_json(path)
        assert result.to_json() == path.read_text(), path  # the same layout, key for key
        assert Result.from_dict(json.loads(result.to_json())) == result
        assert len(result.per_seed) == len(result.seeds) and result.mean.rounds == len(result.mean.success_by_round) - 1
    protocol_files = sorted(RESULTS.glob("*.eval_metaworld*.json"))
    assert protocol_files
    for path in protocol_files:
        mw = MetaworldSummary.from_json(path)
        assert json.loads(mw.to_json()) == json.loads(path.read_text()), path


def test_files_written_before_a_key_existed_read_as_its_default_and_write_back_without_it():
    old = [p for p in _committed_results() if "budget_env_steps" not in json.loads(p.read_text())]
    assert old, "a result from before budget_env_steps"
    result = Result.from_json(old[0])
    assert result.budget_env_steps is None and "budget_env_steps" not in result.to_dict()
    # a result built by the writer writes every key (final_eval_stopped null, warm_restart false) ...
    fresh = dataclasses.replace(result, omitted=None,  # as the writer builds it: no file behind it
                                per_seed=tuple(dataclasses.replace(r, omitted=None) for r in result.per_seed))
    d = fresh.to_dict()
    assert d["per_seed"][0]["final_eval_stopped"] is None and d["per_seed"][0]["warm_restart"] is False
    assert d["warm_restart"] is False and "meta_test_selected" not in d  # ... but selection only when it ran


def _one_result() -> dict:
    return json.loads(Result.from_json(_committed_results()[0]).to_json())


@pytest.mark.parametrize("edit, field, what", [
    (lambda d: d.pop("meta_test"), "meta_test", "missing"),
    (lambda d: d.update(env_steps="many"), "env_steps", "must be an integer"),
    (lambda d: d.update(env_steps=True), "env_steps", "must be an integer"),
    (lambda d: d["per_seed"][0].update(wall_seconds=math.inf), "per_seed[0].wall_seconds", "finite"),
    (lambda d: d["per_seed"][0].update(return_by_round=[0.0]), "per_seed[0].return_by_round", "one entry per round"),
    (lambda d: d["per_seed"][0].update(success_by_round=[0.0, 1.5]), "per_seed[0].success_by_round", "[0, 1]"),
    (lambda d: d["meta_test"].update(rounds=7), "meta_test.rounds", "must be the rounds after round 0"),
    (lambda d: d.update(seeds=[1, 2]), "seeds", "one seed per per_seed entry"),
    (lambda d: d["per_seed"][0].update(final_eval_stopped=[5, 2]), "per_seed[0].final_eval_stopped", "done <= planned"),
    (lambda d: d["per_seed"][0].update(final_eval_stopped=[5]), "per_seed[0].final_eval_stopped", "list of 2"),
    (lambda d: d.update(surprise=1), "surprise", "unknown key"),
    (lambda d: d["per_seed"][0]["segments"][0].update(to_env_steps=-1) if d["per_seed"][0].get("segments")
     else d["per_seed"][0].update(segments=[{"command": "c", "git_commit": None, "from_env_steps": 5,
                                             "to_env_steps": -1, "wall_seconds": 1.0}]),
     "per_seed[0].segments[0].to_env_steps", "must be >= from_env_steps"),
])
def test_a_bad_result_file_is_refused_in_one_line_naming_the_file_and_field(tmp_path, edit, field, what):
    d = _one_result()
    edit(d)
    path = tmp_path / "bad_s1.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ResultFileError) as e:
        Result.from_json(path)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{path}: {field}: ") and what in msg, msg


def test_a_result_that_is_not_json_or_not_an_object_is_refused_in_one_line(tmp_path):
    for text, what in (("{", "not JSON"), ("[1, 2]", "must hold a JSON object"), ('{"env_steps": 1,}', "not JSON")):
        path = tmp_path / "x.json"
        path.write_text(text)
        with pytest.raises(ResultFileError, match=what) as e:
            Result.from_json(path)
        assert len(str(e.value).splitlines()) == 1 and str(path) in str(e.value)


def test_bench_report_rebuilds_the_committed_readme_from_the_committed_results(tmp_path):
    """Every committed result rebuilds with `metarl bench report`: the README it writes from a copy of
    benchmarks/results/ is the committed one, byte for byte."""
    from metarl.app.cli import main

    res = tmp_path / "results"
    shutil.copytree(RESULTS, res)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["bench", "report", "--results", str(res)]) == 0, err.getvalue()
    assert (res / "README.md").read_text() == (RESULTS / "README.md").read_text()
    for agg in ("ml10_maml_trpo.json", "ml1_reach_rl2_ref_restart.json"):
        assert json.loads((res / agg).read_text()) == json.loads((RESULTS / agg).read_text())
    written = _committed_aggregates(res)
    assert [p.name for p in written] == [p.name for p in _committed_aggregates()]
    for path in written:  # what the report writes is what Aggregate reads, and the committed file byte for byte
        assert Aggregate.from_json(path).to_json() == path.read_text() == (RESULTS / path.name).read_text(), path


def test_bench_report_refuses_a_bad_result_file_in_one_line(tmp_path, capsys):
    from metarl.app.cli import main

    d = _one_result()
    d["per_seed"][0]["n_tasks"] = "ten"
    (tmp_path / "x_s1.json").write_text(json.dumps(d))
    assert main(["bench", "report", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"metarl: error: {tmp_path / 'x_s1.json'}: per_seed[0].n_tasks: must be an integer, got a string"
    assert not (tmp_path / "README.md").exists()


# ---- the aggregates `metarl bench report` writes (`<row>.json`, `<row>_all_seeds.json`) ----------------------
def _committed_aggregates(results: Path = RESULTS) -> list[Path]:
    out = []
    for path in sorted(results.glob("*.json")):
        if "." in path.name[:-len(".json")]:
            continue
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("protocol") == "metaworld" and "meta_train" in data:
            out.append(path)
    return out


def test_every_committed_aggregate_reads_back_and_writes_back_byte_for_byte():
    paths = _committed_aggregates()
    assert len(paths) >= 16 and RESULTS / "ml10_pearl_cpu_all_seeds.json" in paths
    empty_train = 0
    for path in paths:
        agg = Aggregate.from_json(path)
        assert agg.to_json() == path.read_text(), path  # key order and number formatting too
        assert Aggregate.from_dict(json.loads(agg.to_json())) == agg
        assert len(agg.meta_test.per_seed) == len(agg.seeds) == len(agg.result_files)
        empty_train += agg.meta_train.is_empty
    assert empty_train, "a row without meta-train files (its meta_train written in the empty layout)"


def test_an_aggregate_with_a_class_some_seed_lacks_keeps_its_nan():
    d = json.loads((RESULTS / "ml10_maml_trpo.json").read_text())
    d["meta_train"]["per_class"] = {**d["meta_train"]["per_class"], "extra-v3": math.nan}
    text = json.dumps(d, indent=2) + "\n"  # as the report writes a mean over seeds with a NaN in it
    agg = Aggregate.from_dict(json.loads(text))
    assert math.isnan(agg.meta_train.per_class["extra-v3"]) and agg.to_json() == text
    d["meta_train"]["per_class"]["extra-v3"] = math.inf
    with pytest.raises(ResultFileError, match=r"^result: meta_train\.per_class\.extra-v3: must be a finite number"):
        Aggregate.from_dict(d)


@pytest.mark.parametrize("edit, field, what", [
    (lambda d: d.update(horizon="500"), "horizon", "must be an integer, got a string"),
    (lambda d: d["meta_test"].update(success_final="high"), "meta_test.success_final", "must be a number, got a string"),
    (lambda d: d["meta_test"]["per_seed"][1].update(success_max=[0.4]), "meta_test.per_seed[1].success_max",
     "must be a number, got a list"),
    (lambda d: d["meta_test"]["per_seed"][0]["history"][2].update(env_steps=2.5),
     "meta_test.per_seed[0].history[2].env_steps", "must be an integer, got a number"),
    (lambda d: d["meta_train"]["per_class"].update({"reach-v3": None}), "meta_train.per_class.reach-v3",
     "must be a number, got null"),
    (lambda d: d["protocol_settings"].update(pool_size="4"), "protocol_settings.pool_size", "must be an integer"),
    (lambda d: d["stopped_early"].__setitem__(0, 0), "stopped_early[0]", "must be true or false, got an integer"),
    (lambda d: d.update(machine="AMD EPYC"), "machine", "must be a list, got a string"),
    (lambda d: d["wall_seconds"].pop(), "wall_seconds", "one entry per seed (3)"),
    (lambda d: d["meta_test"].pop("per_class"), "meta_test.per_class", "missing"),
    (lambda d: d["meta_test"].pop("success_pre_adaptation"), "meta_test.success_pre_adaptation", "missing"),
    (lambda d: d["meta_test"].update(success_metaworld_pooled=1.5), "meta_test.success_metaworld_pooled", "[0, 1]"),
    (lambda d: d["meta_test"]["per_seed"][2].update(seed=7), "meta_test.per_seed[2].seed", "must be seeds[2] (3)"),
    (lambda d: d.update(protocol="curve"), "protocol", "must be 'metaworld'"),
    (lambda d: d["meta_test"].update(surprise=1), "meta_test.surprise", "unknown key"),
])
def test_a_bad_aggregate_is_refused_in_one_line_naming_the_file_and_field(tmp_path, edit, field, what):
    d = json.loads((RESULTS / "ml10_maml_trpo.json").read_text())
    assert d["seeds"] == [1, 2, 3]
    edit(d)
    path = tmp_path / "ml10_maml_trpo.json"
    path.write_text(json.dumps(d, indent=2))
    with pytest.raises(ResultFileError) as e:
        Aggregate.from_json(path)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{path}: {field}: ") and what in msg, msg
