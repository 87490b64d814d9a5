"""The papers' tables as experiment graphs: what each graph trains from what, that a shared prefix
trains once (across graphs, and between graphs running at once), that a stopped graph resumes,
and that the table writer puts the right numbers in the paper's rows and columns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from osdic.checks import ConfigError
from osdic.metrics.quality import compressai_key
from tables.graph import Graph, Node, build_graph, compose_config_for, table_names, union
from tables.runner import PREEMPTED, Runner, exit_status, is_done, schedule_seconds
from tables.writer import TableWriter

REPO = Path(__file__).resolve().parent.parent
TABLES = table_names()
LOCAL = OmegaConf.create({"cluster": "local", "parallel": 2, "timeout_min": 10, "retries": 2})


def _config(node: Node):
    return node.config


# ------------------------------------------------------------------------------ graphs
@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Graph]:
    store = tmp_path_factory.mktemp("store")
    return {name: build_graph(name, [], store) for name in TABLES}


def test_every_arm_of_every_table_runs_from_stage_one_to_the_final_model_each_stage_from_its_predecessor(graphs):
    assert set(graphs) == {"alignment", "gan_weight", "guidance", "lora_rank", "osdiff_discriminator", "osdiff_latency",
                           "osdiff_rd", "sodec_latency", "sodec_rd", "training_strategy"}
    for name, graph in graphs.items():
        for point in graph.points:
            stages = [node.label for node in point.chain]
            expected = ["osdiff"] if name.startswith("osdiff") else ["sodec_stage1", "sodec_stage2", "sodec_stage3",
                                                                      "sodec_stage4"]
            assert stages == expected[:len(stages)] and (stages == expected or point.arm.get("until")), (name, stages)
            for previous, node in zip(point.chain, point.chain[1:]):
                assert f"model.init_from={previous.directory / 'checkpoints' / 'last.ckpt'}" in node.overrides
                assert previous in node.needs
            assert all(e.needs == [point.final] for e in point.evaluations.values())
        order = {node.key: index for index, node in enumerate(graph.nodes)}
        assert all(order[need.key] < order[node.key] for node in graph.nodes for need in node.needs), name


def _instantiable_parts(graph: Graph) -> None:
    """Every training node's λ schedule and alignment term build (the parts an arm or a scale swaps
    whose settings an experiment may also set: a value for the option it replaced fails at start)."""
    import hydra

    for node in graph.nodes:
        if node.kind != "train":
            continue
        schedule = node.config.callbacks.rate_annealing
        if "target_bpp" in schedule:  # a finished run's bpp, read when it trains: a number stands in
            schedule = OmegaConf.merge(schedule, {"target_bpp": 0.1})
        assert hydra.utils.instantiate(schedule).value() > 0, node.name
        if "alignment" in node.config.model:
            hydra.utils.instantiate(node.config.model.alignment)


def test_every_stage_of_every_table_composes_parts_that_build(graphs, tmp_path):
    """A stage whose composed λ schedule or alignment cannot be built would fail hours into a graph,
    at the papers' scale or in miniature (its own experiments, conf/experiment/demo*: the tables whose
    arms swap a schedule, an alignment or a discriminator)."""
    for graph in graphs.values():
        _instantiable_parts(graph)
    for name in ("alignment", "gan_weight", "osdiff_rd", "training_strategy"):
        _instantiable_parts(build_graph(name, ["scale=miniature"], tmp_path))


def _shared(graph: Graph, label: str) -> int:
    """How many distinct nodes of one stage the graph trains."""
    return len({node.key for node in graph.nodes if node.label == label})


def test_every_table_as_one_graph_holds_each_shared_node_once_after_what_it_needs(graphs):
    """`make tables`: the tables' nodes as one graph, a prefix two tables share once, every node after
    the nodes it needs (the runner starts a node only when its needs finished, in this order)."""
    everything = union(list(graphs.values()))
    names = [n.name for n in everything.nodes]
    assert len(names) == len(set(names)) == len({n.name for g in graphs.values() for n in g.nodes})
    assert len(names) < sum(len(g.nodes) for g in graphs.values())  # the tables do share stages
    position = {name: i for i, name in enumerate(names)}
    assert all(position[need.name] < position[node.name] for node in everything.nodes for need in node.needs)


def test_the_gan_weight_table_trains_stages_one_to_three_once_and_branches_at_the_final_stage(graphs):
    graph = graphs["gan_weight"]
    assert [_shared(graph, f"sodec_stage{s}") for s in (1, 2, 3, 4)] == [1, 1, 1, 6]
    betas = [_config(p.final).model.adversary.weight for p in graph.points]
    assert betas == [0, 0.01, 0.05, 0.1, 0.2, 0.5]
    assert [p.row for p in graph.points][0] == "w/o GANs (beta 0)"


def test_only_some_arms_run_what_they_need_and_an_unknown_arm_names_the_key(tmp_path):
    graph = build_graph("gan_weight", ["only_arms=[beta0.2]"], tmp_path)
    assert [n.label for n in graph.nodes if n.kind == "train"] == ["sodec_stage1", "sodec_stage2", "sodec_stage3",
                                                                   "sodec_stage4"]
    assert len(graph.points) == 6, "the table keeps every row"
    with pytest.raises(ConfigError) as error:
        build_graph("gan_weight", ["only_arms=[beta0.3]"], tmp_path)
    assert error.value.key == "only_arms"


def test_the_lora_table_branches_at_stage_two_keeps_the_rank_and_has_a_full_finetuning_arm(graphs):
    graph = graphs["lora_rank"]
    assert [_shared(graph, f"sodec_stage{s}") for s in (1, 2, 3, 4)] == [1, 5, 5, 5]
    for point in graph.points:
        backbones = [_config(node).model.codec.backbone for node in point.chain[1:]]
        assert len({(b.lora_rank, b.full_finetune) for b in backbones}) == 1, "the rank is the model's, in every stage"
    full = next(p for p in graph.points if p.row == "full fine-tuning")
    assert (_config(full.final).model.codec.backbone.lora_rank, _config(full.final).model.codec.backbone.full_finetune) \
        == (None, True)


def test_guidance_arms_are_trained_through_the_joint_stage_and_the_text_arm_captions_the_image(graphs):
    graph = graphs["guidance"]
    assert [_shared(graph, f"sodec_stage{s}") for s in (1, 2, 3, 4)] == [1, 4, 4, 4]
    for point in graph.points:
        targets = {_config(node).model.codec.guidance._target_ for node in point.chain[1:]}
        assert len(targets) == 1
        assert _config(point.chain[2]).model.rate_in_loss, "the rate moves in the joint stage"
    text = next(p for p in graph.points if p.row.startswith("(ii)"))
    assert _config(text.final).model.codec.guidance._target_ == "osdic.models.guidance.CaptionGuidance"


def test_alignment_arms_branch_at_the_joint_stage_and_keep_their_term_in_the_final_stage(graphs):
    graph = graphs["alignment"]
    assert [_shared(graph, f"sodec_stage{s}") for s in (1, 2, 3, 4)] == [1, 1, 4, 4]
    for point, target in zip(graph.points, ["NoAlignment", "MSELPIPSAlignment", "MergedAlignment", "MSEAlignment"]):
        assert {_config(n).model.alignment._target_.rsplit(".", 1)[1] for n in point.chain[2:]} == {target}


@pytest.mark.parametrize("rate_point", [2.0, 8.0])
def test_training_strategies_derive_every_lambda_from_the_rate_point(graphs, tmp_path, rate_point):
    graph = graphs["training_strategy"] if rate_point == 2.0 else build_graph(
        "training_strategy", [f"table.rate_point={rate_point}"], tmp_path)
    points = {p.arm["key"]: p for p in graph.points}
    stage3 = {key: _config(p.chain[2]) for key, p in points.items()}
    annealing = stage3["rate_annealing"].callbacks.rate_annealing
    assert (annealing.lambda_start, annealing.lambda_end) == (rate_point / 2, rate_point)
    low_to_high = stage3["low_to_high"].callbacks.rate_annealing
    assert (low_to_high.lambda_start, low_to_high.lambda_end) == (2 * rate_point, rate_point)
    matched = stage3["joint_matched"].callbacks.rate_annealing
    assert matched._target_.endswith("TargetRate") and matched.lambda_start == rate_point
    assert matched.target_bpp == str(points["rate_annealing"].chain[2].directory), "(iv)'s own stage 3"
    assert points["rate_annealing"].chain[2] in points["joint_matched"].chain[2].needs
    assert not any(_config(n).model.train_vae_module for n in points["frozen_vae"].chain[2:])
    assert {str(c.model.scheduler._target_) for c in stage3.values()} == {"torch.optim.lr_scheduler.CosineAnnealingLR"}


def test_the_rd_curve_is_one_chain_per_rate_point_to_the_final_stage_on_three_datasets(graphs):
    graph = graphs["sodec_rd"]
    assert [p.rate_point for p in graph.points] == [1, 2, 4, 8, 16]
    assert [_shared(graph, f"sodec_stage{s}") for s in (1, 2, 3, 4)] == [5, 5, 5, 5]
    for point in graph.points:
        assert _config(point.chain[0]).callbacks.rate_annealing.lambda_start == point.rate_point / 2
        assert _config(point.final).callbacks.rate_annealing.lambda_start == point.rate_point
        assert list(point.evaluations) == ["Kodak", "DIV2K-val", "CLIC2020"]


def test_osdiffs_discriminator_table_has_four_rate_points_per_variant_on_clic_at_768(graphs):
    graph = graphs["osdiff_discriminator"]
    assert len(graph.points) == 12 and _shared(graph, "osdiff") == 12
    anchor = [p for p in graph.points if p.row == "w/o Discriminator"]
    assert [p.rate_point for p in anchor] == [0.5, 1, 2, 4]
    assert all(_config(p.final).model.adversary.weight == 0 for p in anchor)
    assert all(_config(e).data.name == "CLIC2020-768" for p in graph.points for e in p.evaluations.values())


def test_latency_tables_time_the_final_model_at_the_papers_resolution(graphs):
    for name, resolution in [("sodec_latency", [512, 512]), ("osdiff_latency", [512, 768])]:
        for point in graphs[name].points:
            evaluation = _config(next(iter(point.evaluations.values())))
            assert evaluation.benchmark and list(evaluation.benchmark_resolution) == resolution
    hific = next(p for p in graphs["sodec_latency"].points if p.row == "HiFiC")
    assert [n.label for n in hific.chain] == ["sodec_stage1"], "our HiFiC row is SODEC's own stage 1"


# --------------------------------------------------------------------------- running
def fake_graph(store: Path, spec: dict[str, tuple[list[str], list[str]]]) -> Graph:
    """A graph of stand-in jobs (tests/graph_job.py): name → (its arguments, the names it needs)."""
    nodes: dict[str, Node] = {}
    for name, (arguments, needs) in spec.items():
        nodes[name] = Node("train", "stage", "tests/graph_job.py", arguments, name, store, [nodes[n] for n in needs])
    return Graph("fake", OmegaConf.create({}), [], list(nodes.values()))


def _starts(store: Path) -> list[tuple[str, str]]:
    log = store / "runs.log"
    return [tuple(line.split()[:2]) for line in log.read_text().splitlines()] if log.is_file() else []


PREFIX = {"p1": ([], []), "p2": ([], ["p1"])}


def test_a_second_graph_sharing_a_prefix_trains_none_of_it_again(tmp_path):
    first = Runner(fake_graph(tmp_path, {**PREFIX, "a": ([], ["p2"])}), LOCAL, poll_s=0.2).run()
    second = Runner(fake_graph(tmp_path, {**PREFIX, "b": ([], ["p2"])}), LOCAL, poll_s=0.2).run()
    assert set(first.values()) == {"finished"}
    assert second == {"p1": "reused", "p2": "reused", "b": "finished"}
    assert sorted(_starts(tmp_path)) == sorted([(f"stage-{n}", "started") for n in ("p1", "p2", "a", "b")])


def test_a_tables_time_alone_is_scheduled_from_its_jobs_times_as_the_runner_starts_them(tmp_path):
    """The per-table estimate `--dry-run` prints after a `make tables` run: a shared prefix, then
    three arms; two at a time the arms overlap, one at a time they add up."""
    graph = fake_graph(tmp_path, {**PREFIX, "a": ([], ["p2"]), "b": ([], ["p2"]), "c": ([], ["p1"])})
    seconds = {"stage-p1": 10.0, "stage-p2": 20.0, "stage-a": 5.0, "stage-b": 7.0, "stage-c": 30.0}
    assert schedule_seconds(graph.nodes, seconds, 1) == 72.0
    assert schedule_seconds(graph.nodes, seconds, 2) == 42.0  # p1; then p2 beside c; a, then b, beside c
    with pytest.raises(ValueError, match="stage-a"):
        schedule_seconds(graph.nodes[2:3], seconds, 2)


def _run_fake_graph(store: str, spec: dict) -> None:
    sys.exit(exit_status(Runner(fake_graph(Path(store), spec), LOCAL, poll_s=0.2).run()))


def _driver(store: Path, spec: dict, output: int = subprocess.PIPE) -> subprocess.Popen:
    """A graph run in its own process group (as a scheduler starts a job)."""
    code = f"from tests.test_tables import _run_fake_graph; _run_fake_graph({str(store)!r}, {spec!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True, stdout=output,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_two_graphs_running_at_once_train_a_shared_prefix_once(tmp_path):
    slow_prefix = {"p1": (["seconds=3"], []), "p2": ([], ["p1"])}
    drivers = [_driver(tmp_path, {**slow_prefix, arm: ([], ["p2"])}) for arm in ("a", "b")]
    outputs = [driver.communicate(timeout=180)[0] for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outputs
    starts = [name for name, _ in _starts(tmp_path)]
    assert sorted(starts) == ["stage-a", "stage-b", "stage-p1", "stage-p2"], starts
    assert any("another graph runs stage-p1" in output for output in outputs)


def test_a_graph_stopped_by_sigterm_to_its_process_group_resumes_where_it_stopped(tmp_path):
    chain = {"p1": ([], []), "p2": (["seconds=60"], ["p1"]), "p3": ([], ["p2"])}
    driver = _driver(tmp_path, chain)
    _wait_for(lambda: ("stage-p2", "started") in _starts(tmp_path))
    time.sleep(1)  # the job's signal handler is installed
    os.killpg(driver.pid, signal.SIGTERM)  # as a scheduler preempts a job
    output = driver.communicate(timeout=60)[0]
    assert driver.returncode == PREEMPTED, output
    assert (tmp_path / "stage-p1" / "done.json").is_file() and not (tmp_path / "stage-p2" / "done.json").is_file()
    chain["p2"] = ([], ["p1"])  # (the same node: its arguments are not part of a fake node's key)
    again = Runner(fake_graph(tmp_path, chain), LOCAL, poll_s=0.2).run()
    assert again == {"p1": "reused", "p2": "finished", "p3": "finished"}
    assert _starts(tmp_path) == [("stage-p1", "started"), ("stage-p2", "started"), ("stage-p2", "resumed"),
                                 ("stage-p3", "started")]


@pytest.mark.parametrize("job_seconds, still_running", [(8, True), (1, False)])
def test_a_graph_started_again_adopts_the_job_its_predecessor_left_behind(tmp_path, job_seconds, still_running):
    """The graph alone dies (kill -9, a lost login node); its job goes on. Started again, the graph
    waits for that job if it still runs, and records it if it finished meanwhile: never a second
    run of it in the same folder."""
    chain = {"p1": ([f"seconds={job_seconds}"], []), "p2": ([], ["p1"])}
    driver = _driver(tmp_path, chain, output=subprocess.DEVNULL)
    _wait_for(lambda: (tmp_path / "stage-p1" / "job.pid").is_file())
    driver.kill()
    driver.wait(timeout=30)
    if not still_running:
        _wait_for(lambda: (tmp_path / "stage-p1" / "job_exit.json").is_file())
    messages = []
    status = Runner(fake_graph(tmp_path, chain), LOCAL, say=messages.append, poll_s=0.2).run()
    assert status == {"p1": "finished", "p2": "finished"}
    assert [name for name, _ in _starts(tmp_path)] == ["stage-p1", "stage-p2"], "p1 ran once"
    assert any("adopting stage-p1's job, started by an earlier graph" in m for m in messages)


def test_a_jobs_wrapper_starts_without_the_training_stack():
    """Each job's submitit wrapper unpickles its command from tables.runner before it starts the
    script: importing torch and Lightning there cost every one of a table's jobs seconds of CPU."""
    code = "import sys, tables.runner; print(sorted({'torch', 'pytorch_lightning', 'hydra'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_a_preempted_job_starts_again_and_a_failed_one_blocks_only_what_needs_it(tmp_path):
    spec = {"p1": (["preempt_once=1"], []), "bad": (["seconds=never"], []), "after_bad": ([], ["bad"]),
            "after_p1": ([], ["p1"])}
    messages = []
    status = Runner(fake_graph(tmp_path, spec), LOCAL, say=messages.append, poll_s=0.2).run()
    assert status == {"p1": "finished", "bad": "failed", "after_bad": "blocked", "after_p1": "finished"}
    assert ("stage-p1", "resumed") in _starts(tmp_path)
    assert any("FAILED: stage-bad (exit 1)" in m and "ValueError" in m for m in messages)


# ----------------------------------------------------------------------------- writing
def _finish(node: Node, name: str, payload: dict) -> None:
    node.directory.mkdir(parents=True, exist_ok=True)
    (node.directory / name).write_text(json.dumps(payload))
    (node.directory / "done.json").write_text("{}")


def _evaluated(node: Node, **results: float) -> None:
    _finish(node, "codec.json", {"results": {compressai_key(k): [v] for k, v in results.items()},
                                 "dataset": "Kodak", "images": 24})


def _writer(graph: Graph, tmp_path: Path, *overrides: str) -> TableWriter:
    config = compose_config_for("tables", [f"table={graph.name}", f"output_dir={tmp_path / 'tables'}", *overrides],
                                None)
    return TableWriter(graph, config)


def test_an_ablation_table_has_the_papers_rows_and_columns_ours_beside_the_published(graphs, tmp_path):
    graph = graphs["gan_weight"]
    for index, point in enumerate(graph.points[:5]):  # the last arm has not finished
        _evaluated(point.evaluations["Kodak"], lpips_vgg=0.3 + index / 100, dists=0.15, ms_ssim_y=0.8, clipiqa=0.7,
                   bpp=0.03)
    text = _writer(graph, tmp_path).write().read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == ("| GAN loss weight (β) | LPIPS ↓ | DISTS ↓ | MS-SSIM ↑ | CLIPQA ↑ | bpp ↓ | paper LPIPS | "
                        "paper DISTS | paper MS-SSIM | paper CLIPQA |")
    assert [row.split(" | ")[0] for row in table[1:]] == ["| w/o GANs (beta 0)", "| beta 0.01", "| beta 0.05",
                                                         "| beta 0.1", "| beta 0.2", "| beta 0.5"]
    assert table[2] == "| beta 0.01 | 0.31 | 0.15 | 0.8 | 0.7 | 0.03 | 0.341 | 0.156 | 0.845 | 0.729 |"
    assert table[6].startswith("| beta 0.5 | – | – | – | – | – | 0.365")
    assert "not finished (cells –): beta 0.5" in text
    csv_rows = (tmp_path / "tables" / "gan_weight.csv").read_text().splitlines()
    assert len(csv_rows) == 7 and "beta 0.01" in csv_rows[2]
    assert r"\begin{tabular}" in (tmp_path / "tables" / "gan_weight.tex").read_text()


def test_a_bd_rate_table_compares_each_variants_curve_with_the_anchors(graphs, tmp_path):
    graph = graphs["osdiff_discriminator"]
    for point in graph.points:  # the pixel discriminator's curve at half the rate of the anchor's, ours a third
        factor = {"w/o Discriminator": 1.0, "w/ Pixel-Space Discriminator": 0.5, "w/ Our Discriminator": 1 / 3}[point.row]
        quality = point.rate_point  # a curve: quality grows with the rate point, the bpp as the factor says
        _evaluated(point.evaluations["CLIC2020-768"], ms_ssim=0.5 + quality / 10, dists=0.3 - quality / 20,
                   bpp=factor * 0.02 * quality)
    text = _writer(graph, tmp_path).write().read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:4] for line in text.splitlines() if line.startswith("| w")}
    assert rows["w/o Discriminator"] == ["0", "0", "0"]
    assert [float(v) for v in rows["w/ Pixel-Space Discriminator"]] == pytest.approx([-50, -50, -50], abs=0.1)
    assert [float(v) for v in rows["w/ Our Discriminator"]] == pytest.approx([-66.67, -66.67, -66.67], abs=0.1)
    assert "-72.6" in text, "the paper's numbers beside ours"


def test_an_rd_table_lists_our_points_the_published_ones_and_plots_them(graphs, tmp_path):
    graph = graphs["sodec_rd"]
    for point in graph.points[1:4]:  # λ = 2, 4, 8 on Kodak
        _evaluated(point.evaluations["Kodak"], ms_ssim_y=0.9 - 0.02 * point.rate_point, lpips_vgg=0.2,
                   dists=0.1 + 0.005 * point.rate_point, musiq=70.0, clipiqa=0.7, bpp=0.1 / point.rate_point)
    kodak = _writer(graph, tmp_path).write().read_text().split("\n## ")[1]
    assert kodak.startswith("SODEC rate–distortion–perception curves (Fig. 4) — Kodak; published points: Kodak")
    assert "| ours | λ = 2 | 0.05 | 0.86 |" in kodak and "| ours | λ = 16 | – |" in kodak
    assert kodak.count("| SODEC (published) |") == 4 and "BD-rate of ours vs SODEC (published)" in kodak
    assert (tmp_path / "tables" / "sodec_rd_Kodak_ms_ssim_y.png").is_file()


def _timed(graph: Graph) -> None:
    for point in graph.points:
        _finish(next(iter(point.evaluations.values())), "latency.json", {
            "device": "CPU", "dtype": "float32", "resolution": [512, 512], "repeat": 5, "models": {"codec": {
                "encode": 0.005, "decode": {"entropy decoding (CPU)": 0.002, "D_a (fidelity decoder)": 0.004,
                                            "total": 0.006}, "bpp": 0.03}}})


def test_a_latency_table_puts_our_measured_rows_beside_the_published(graphs, tmp_path):
    _timed(graphs["sodec_latency"])
    text = _writer(graphs["sodec_latency"], tmp_path).write().read_text()
    assert "| SODEC (paper) | 232.9 | 5.0 | 227.9 | 0.0314 |" in text
    assert "| SODEC (ours, CPU) | 11 | 5 | 6 | 0.03 |" in text and "| HiFiC (ours, CPU) |" in text


def test_osdiffs_latency_table_keeps_a_row_the_paper_prints_twice_and_our_one_step(graphs, tmp_path):
    _timed(graphs["osdiff_latency"])
    rows = [line for line in _writer(graphs["osdiff_latency"], tmp_path).write().read_text().splitlines()
            if line.startswith("| ") and ("(paper)" in line or "(ours" in line)]
    assert rows == ["| PerCo (paper) | 5 | 0.08 | 0.665 | A100 |", "| PerCo (paper) | 20 | 0.08 | 2.551 | A100 |",
                    "| DiffEIC (paper) | 50 | 0.093 | 2.761 | RTX 4090 |", "| OSDiff (paper) | 1 | 0.101 | 0.06 | RTX 4090 |",
                    "| OSDiff (ours, CPU) | 1 | 0.005 | 0.006 | CPU |"]


# ------------------------------------------------------------------------- end to end
def _inspect_summary(run_directory: Path) -> dict:
    wandb_run = sorted((run_directory / "wandb").glob("offline-run-*"))[-1]
    output = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--summary", "--json",
                             str(wandb_run)], capture_output=True, text=True, check=True, cwd=run_directory).stdout
    return json.loads(output)["summary"]


@pytest.mark.slow
def test_the_gan_weight_table_end_to_end_then_a_second_table_reuses_its_chain(tmp_path):
    """`python -m tables gan_weight` at the tests' scale, one of its arms (``only_arms``): through
    the real scripts, the paper's table filled from real files for that arm and the others listed
    as not finished, the arm's evaluation in its W&B run; then the latency table, whose SODEC chain
    is the β = 0.2 arm's, trains nothing. (Which arm shares which stage is checked on the graphs
    above; a second arm here would cost the suite a stage and an evaluation.)"""
    common = [f"store={tmp_path / 'store'}", f"output_dir={tmp_path / 'tables'}", "scale=test", "executor.parallel=2"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run([sys.executable, "-m", "tables", "gan_weight", *common, "only_arms=[beta0.2]"],
                            cwd=REPO, capture_output=True, text=True, timeout=1500, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("[graph] start: sodec_stage") == 4, "stages 1–3, then the arm's final stage"
    table = (tmp_path / "tables" / "gan_weight.md").read_text()
    rows = {row[0][2:]: row[1:6] for row in (line.split(" | ") for line in table.splitlines())
            if row[0].startswith(("| w/o", "| beta"))}
    assert len(rows) == 6, table
    assert "–" not in rows["beta 0.2"], table
    assert rows["beta 0.1"] == ["–"] * 5
    assert "not finished (cells –): beta 0.01, beta 0.05, beta 0.1, beta 0.5, w/o GANs (beta 0)" in table
    assert "TEST RUN" in table and "RANDOM weights" in table
    graph = build_graph("gan_weight", common, tmp_path / "store")
    for point in (p for p in graph.points if p.arm["key"] == "beta0.2"):
        summary = _inspect_summary(point.final.directory)
        assert {"eval/Kodak/lpips-vgg", "eval/Kodak/dists", "eval/Kodak/ms-ssim-y", "eval/Kodak/clipiqa",
                "eval/Kodak/bpp"} <= set(summary), summary

    latency = subprocess.run([sys.executable, "-m", "tables", "sodec_latency", *common], cwd=REPO, capture_output=True,
                             text=True, timeout=900, env=env)
    assert latency.returncode == 0, latency.stdout[-3000:] + latency.stderr[-3000:]
    assert "[graph] start: sodec_stage" not in latency.stdout
    assert "| SODEC (ours, CPU) |" in (tmp_path / "tables" / "sodec_latency.md").read_text()
    assert all(is_done(node) for node in build_graph("sodec_latency", common, tmp_path / "store").nodes)
