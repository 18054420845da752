"""Dataset generation: reproducible from the seed, identical however it is run, resumable, labelled right."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DeepDRRSlicerLib.cli import main
from DeepDRRSlicerLib.geometry import DetectorGeometry
from DeepDRRSlicerLib.resources import sample_ct_path, sample_landmarks_path

CT = str(sample_ct_path())
MARKS = str(sample_landmarks_path())
BASE = ["generate", "--ct", CT, "--landmarks", MARKS, "--sample", "alpha=-40:40,beta=-20:20,n=7",
        "--jitter", "iso=15,roll=5", "--randomize", "kvp=70:120,filtration.Al=2:5", "--size", "48", "40",
        "--shard-size", "3", "--quiet"]


def digests(folder: Path) -> dict:
    """sha256 of every file of a dataset, except the run's report (timings)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "report.json"}


def run(arguments, out) -> int:
    return main([*arguments, "--out", str(out)])


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "ds"
    assert run(BASE, out) == 0
    return out


def test_same_seed_gives_the_same_bytes_and_another_seed_other_images(serial, tmp_path):
    assert run(BASE, tmp_path / "again") == 0
    assert digests(tmp_path / "again") == digests(serial)
    assert run([*BASE, "--seed", "1"], tmp_path / "other") == 0
    first = np.loadtxt(serial / "manifest.csv", delimiter=",", skiprows=1, usecols=(6, 7), dtype=float)
    other = np.loadtxt(tmp_path / "other" / "manifest.csv", delimiter=",", skiprows=1, usecols=(6, 7), dtype=float)
    assert not np.allclose(first, other)
    assert np.all((first[:, 0] >= -40) & (first[:, 0] <= 40) & (first[:, 1] >= -20) & (first[:, 1] <= 20))


def test_layout_manifest_and_card(serial):
    files = digests(serial)
    assert {"manifest.csv", "dataset.json", "README.md", "plan.json"} <= set(files)
    assert sorted(f for f in files if f.endswith(".tar")) == [f"shards/shard-00000{n}.tar" for n in range(3)]
    info = json.loads((serial / "dataset.json").read_text())
    assert info["images"] == 7 and len(info["shards"]) == 3
    assert info["members"]["primary.npy"]["shape"] == [40, 48]
    for shard in info["shards"]:
        assert hashlib.sha256((serial / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    with tarfile.open(serial / "shards" / "shard-000000.tar") as tar:   # a plain tar any reader opens
        names = tar.getnames()
    members = [n.split(".", 1)[1] for n in names if n.startswith("ct0000_pose000000.")]
    assert members[:2] == ["primary.npy", "line_integrals.npy"] and members[-2:] == ["geometry.json", "json"]
    assert {"landmarks.npy", "heatmaps.npy"} <= set(members)
    assert names[len(members)] == "ct0000_pose000001.primary.npy"
    assert set(info["members"]) == set(members)
    rows = (serial / "manifest.csv").read_text().splitlines()
    assert len(rows) == 8 and rows[0].startswith("index,key,file,offset,ct_index,ct,alpha_deg")
    assert rows[0].endswith("filtration.Al,kvp")
    card = (serial / "README.md").read_text()
    assert "7 simulated fluoroscopy images" in card and "kvp=70:120" in card and "| `<key>.heatmaps.npy` |" in card


def test_each_image_is_what_the_engine_renders_for_its_recorded_pose_and_physics(serial):
    from DeepDRRSlicerLib.dataset.torch_data import ShardDataset
    from DeepDRRSlicerLib.landmarks import load_landmarks
    from DeepDRRSlicerLib.pipeline import SimulationSettings, Simulator
    from DeepDRRSlicerLib.volume import load_volume

    dataset = ShardDataset(serial, verify=True)
    volume = load_volume(CT)
    landmarks = load_landmarks(MARKS)
    kvps = set()
    for index in (0, 4, 6):
        arrays, geometry_dict, meta, _ = dataset.read_raw(index)
        geometry = DetectorGeometry.from_dict(geometry_dict)
        assert np.allclose(geometry.projection_matrix(), geometry_dict["projection_matrix"])
        physics = meta["physics"]
        kvps.add(physics["kvp"])
        assert 70 <= physics["kvp"] <= 120 and 2 <= physics["filtration.Al"] <= 5
        settings = SimulationSettings(kvp=physics["kvp"], filtration={"Al": physics["filtration.Al"]})
        result = Simulator(volume, settings).render(geometry, landmarks=landmarks)
        assert np.array_equal(arrays["primary"], result.stages["primary"])
        for n, name in enumerate(meta["material_names"]):
            assert np.array_equal(arrays["line_integrals"][n], result.stages[f"line_integral_{name}"])
        for name, mask in getattr(result, "masks", {}).items():   # e.g. truncation, where the CT cuts the body
            assert np.array_equal(arrays[name], (mask > 0).astype(np.uint8))
        # landmarks: u, v, depth from P; heatmap peaks at the nearest pixel of each visible one
        for n, point in enumerate(landmarks):
            uv, depth = geometry.project(point.position_ras[None])
            u, v, d, visible = arrays["landmarks"][n]
            assert meta["landmark_labels"][n] == point.label
            assert u == pytest.approx(uv[0, 0], abs=1e-3) and v == pytest.approx(uv[0, 1], abs=1e-3)
            assert d == pytest.approx(depth[0], rel=1e-6)
            assert bool(visible) == bool(geometry.contains_pixel(uv)[0])
            heatmap = arrays["heatmaps"][n].astype(np.float64)
            if visible and 0.5 <= u <= 46.5 and 0.5 <= v <= 38.5:
                row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
                assert (column, row) == (round(u), round(v))
                expected = np.exp(-((column - u) ** 2 + (row - v) ** 2) / (2 * 2.0**2))
                assert heatmap[row, column] == pytest.approx(expected, abs=1e-3)
            elif not visible:
                assert not heatmap.any()
    assert len(kvps) == 3


def test_two_local_workers_write_the_same_bytes_as_serial(serial, tmp_path):
    assert run([*BASE, "--workers", "2"], tmp_path / "workers") == 0
    assert digests(tmp_path / "workers") == digests(serial)


def test_shards_split_over_machines_complete_the_same_dataset(serial, tmp_path, capsys):
    out = tmp_path / "split"
    assert run([*BASE, "--shard", "1/2"], out) == 0
    assert "1/3 shards" in capsys.readouterr().out
    assert not (out / "manifest.csv").exists()
    assert run([*BASE, "--shard", "0/2"], out) == 0
    assert digests(out) == digests(serial)


def test_cancelled_and_crashed_runs_resume_to_the_same_bytes(serial, tmp_path):
    from DeepDRRSlicerLib.cli import build_parser
    from DeepDRRSlicerLib.dataset.cli import config_from_args
    from DeepDRRSlicerLib.dataset.runner import generate
    from DeepDRRSlicerLib.dataset.torch_data import ShardDataset

    out = tmp_path / "resumed"
    config = config_from_args(build_parser().parse_args([*BASE, "--out", str(out)]))
    seen = []
    report = generate(config, out, progress=lambda done, total, message: seen.append(done),
                      cancel=lambda: max(seen, default=0) >= 5)
    assert report.cancelled and not report.complete
    assert (out / "shards" / "shard-000000.tar").is_file()
    partial = out / "shards" / "shard-000001.tar.partial"
    assert partial.is_file() and not (out / "shards" / "shard-000001.tar").exists()
    assert not (out / "manifest.csv").exists()
    # a crash in the middle of writing: a torn sample at the end of the partial shard and of its log
    with open(partial, "ab") as handle:
        handle.write(b"torn" * 1000)
    with open(out / "shards" / "shard-000001.log", "a") as handle:
        handle.write('{"key": "ct0000_pose0000')
    with pytest.warns(UserWarning, match="unfinished"):
        readable = ShardDataset(out)
    assert len(readable) == 3   # only the complete shard is read
    report = generate(config, out)
    assert report.complete and report.rendered_now == 2
    assert digests(out) == digests(serial)


def test_a_killed_process_leaves_no_readable_broken_shard_and_resumes(serial, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "DeepDRRSlicerLib.cli", *BASE, "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "shards" / "shard-000000.tar").exists():
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for shard in (out / "shards").glob("*.tar"):
        with tarfile.open(shard) as tar:   # every file named .tar is a complete archive
            names = tar.getnames()
            assert len(names) % sum(n.startswith("ct0000_pose000000.") for n in names) == 0
        record = json.loads(shard.with_suffix(".json").read_text())
        assert hashlib.sha256(shard.read_bytes()).hexdigest() == record["sha256"]
    assert run(BASE, out) == 0
    assert digests(out) == digests(serial)


def test_ray_with_two_workers_writes_the_same_bytes_as_serial(serial, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install .[ray]); not installed here")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        assert run([*BASE, "--ray", "auto"], tmp_path / "ray") == 0
        report = json.loads((tmp_path / "ray" / "report.json").read_text())
        assert report["runner"].startswith("ray")
    finally:
        ray.shutdown()
    assert digests(tmp_path / "ray") == digests(serial)


# ---- labels: projected masks and path lengths from the same projector ---------------------------
def _block_phantom(folder: Path):
    """A water cube (2 mm voxels) with an axis-aligned labelled block (label 7) and a second (label 3)."""
    hu = np.full((30, 32, 34), -1000.0, dtype=np.float32)   # [k, j, i]
    hu[3:27, 4:28, 4:30] = 0.0
    hu[12:16, 10:14, 24:28] = 700.0   # some bone, so the values look like HU
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[10:20, 8:18, 12:22] = 7
    labels[22:25, 20:24, 5:9] = 3
    spacing, origin = (2.0, 2.0, 2.0), (10.0, -20.0, 5.0)   # LPS origin
    paths = []
    for name, array in (("ct.nii.gz", hu), ("labels.nii.gz", labels)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        sitk.WriteImage(image, str(folder / name))
        paths.append(folder / name)
    return paths, labels


def _chord_through_box(source, ends, low, high):
    """Exact length (mm) of segments source -> ends inside the box [low, high] (slab method)."""
    direction = ends - source
    t0, t1 = np.zeros(len(ends)), np.ones(len(ends))
    for axis in range(3):
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (low[axis] - source[axis]) / direction[:, axis]
            b = (high[axis] - source[axis]) / direction[:, axis]
        t0 = np.maximum(t0, np.minimum(a, b))
        t1 = np.minimum(t1, np.maximum(a, b))
    return np.clip(t1 - t0, 0, None) * np.linalg.norm(direction, axis=1)


def test_label_masks_and_path_lengths_match_exact_chords(tmp_path):
    from DeepDRRSlicerLib.dataset.torch_data import ShardDataset
    from DeepDRRSlicerLib.volume import load_volume

    (ct, labels_path), labels = _block_phantom(tmp_path)
    names = tmp_path / "names.csv"
    names.write_text("id,name\n7,liver\n3,kidney\n")
    out = tmp_path / "ds"
    code = run(["generate", "--ct", str(ct), "--labels", str(labels_path), "--label-names", str(names),
                "--sample", "alpha=-50:50,beta=-30:30,n=3", "--size", "40", "36", "--pixel-spacing", "3",
                "--quiet"], out)
    assert code == 0
    volume = load_volume(ct)
    dataset = ShardDataset(out)
    assert [s["name"] for s in json.loads((out / "dataset.json").read_text())["structures"]] == ["kidney", "liver"]
    for index in range(3):
        arrays, geometry_dict, meta, _ = dataset.read_raw(index)
        geometry = DetectorGeometry.from_dict(geometry_dict)
        ends = geometry.pixel_centers().reshape(-1, 3)
        for channel, label in enumerate((3, 7)):
            k, j, i = np.nonzero(labels == label)
            corners = np.array([[i.min() - 0.5, j.min() - 0.5, k.min() - 0.5, 1],
                                [i.max() + 0.5, j.max() + 0.5, k.max() + 0.5, 1]]) @ volume.ijk_to_ras.T
            low, high = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
            exact = _chord_through_box(geometry.source, ends, low, high).reshape(geometry.shape)
            path = arrays["path_lengths"][channel]
            assert np.abs(path - exact).max() < 1e-3 * exact.max() + 1e-3
            assert exact.max() > 5   # the ray crosses the block
            clear = (exact > 0.05) | (exact == 0)
            assert np.array_equal(arrays["masks"][channel][clear], (exact > 0)[clear])
            assert arrays["masks"][channel].dtype == np.uint8
        assert meta["labelled"] is True
    # the same CT listed again without its label map: zero masks that say they are not labels
    other = tmp_path / "unlabelled"
    assert run(["generate", "--ct", str(ct), "--ct", str(ct), "--labels", str(labels_path), "--labels", "",
                "--label-names", str(names), "--sample", "alpha=0,n=1", "--size", "16", "16", "--quiet"], other) == 0
    metas = [ShardDataset(other).read_raw(index)[2] for index in range(2)]
    assert [m["labelled"] for m in metas] == [True, False]


# ---- bad input -----------------------------------------------------------------------------------
def _fails(capsys, arguments, message, out):
    code = run(arguments, out)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "fix:" in err
    return err


def test_unreadable_cts_in_a_list_are_skipped_and_reported(tmp_path, capsys):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    listing = tmp_path / "cts.csv"
    listing.write_text(f"ct,landmarks\n{broken}\n{CT},{MARKS}\nmissing.nrrd\n")
    out = tmp_path / "ds"
    code = run(["generate", "--ct-list", str(listing), "--sample", "alpha=-10:10,n=2", "--size", "32", "32",
                "--quiet"], out)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipped CT 0" in captured.err and "skipped CT 2" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert [c["index"] for c in report["skipped_cts"]] == [0, 2]
    assert report["written"] == 2
    assert "not found" in report["skipped_cts"][1]["reason"]
    assert "skipped" in (out / "README.md").read_text()
    _fails(capsys, ["generate", "--ct", str(broken), "--sample", "alpha=0,n=1"], "None of the 1 CT(s)",
           tmp_path / "none")


def test_pose_ranges_without_a_ray_through_the_ct_are_reported(tmp_path, capsys):
    poses = tmp_path / "poses.json"
    poses.write_text(json.dumps([{"alpha": 0, "isocenter": [2000, 0, 0]}, {"alpha": 90, "isocenter": [0, 0, 3000]}]))
    _fails(capsys, ["generate", "--ct", CT, "--poses", str(poses), "--size", "32", "32"], "No pose puts a ray",
           tmp_path / "a")
    poses.write_text(json.dumps([{"alpha": 0, "isocenter": [2000, 0, 0]}, {"alpha": 10}]))
    code = run(["generate", "--ct", CT, "--poses", str(poses), "--size", "32", "32", "--quiet"], tmp_path / "b")
    captured = capsys.readouterr()
    assert code == 0
    assert "1 of 2 poses put no ray through CT 0" in captured.err
    assert "wrote 1 images" in captured.out and "rendered 1 now" in captured.out   # the blind pose is not counted
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["written"] == 1 and report["failed"][0]["key"] == "ct0000_pose000000"
    assert "no ray" in report["failed"][0]["reason"]


def test_bad_options_give_clear_errors(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["generate", "--ct", CT, "--size", "32", "32"]
    _fails(capsys, [*base, "--sample", "alpha=0,n=1", "--stages", "primary,scatterish"], "not available", out)
    _fails(capsys, [*base, "--sample", "alpha=0,n=1", "--randomize", "bogus=1:2"], "not a setting this engine has",
           out)
    _fails(capsys, [*base, "--sample", "alpha=0,n=1", "--randomize", "kvp=20:90"], "outside the supported", out)
    _fails(capsys, [*base, "--sample", "alpha=0:10"], "no n", out)
    _fails(capsys, [*base, "--sample", "gamma=0:10,n=2"], "unknown pose parameter", out)
    _fails(capsys, [*base, "--sample", "alpha=0:10/3,n=4"], "mixes a grid", out)
    _fails(capsys, [*base, "--sample", "alpha=0,n=1", "--jitter", "iso=-2"], "negative", out)
    _fails(capsys, [*base, "--sample", "alpha=0,n=1", "--randomize", "kvp=0:100:log"], "positive", out)
    _fails(capsys, [*base], "exactly one of --sample and --poses", out)
    _fails(capsys, [*base, "--sample", "alpha=0,n=1", "--landmarks", MARKS, "--landmarks", MARKS],
           "2 --landmarks file(s) for 1 CT(s)", out)
    _fails(capsys, [*base, "--sample", "alpha=0,n=1", "--shard", "2/2"], "not i/n", out)
    assert not out.exists()


def test_output_folder_is_never_clobbered(tmp_path, capsys):
    base = ["generate", "--ct", CT, "--sample", "alpha=0:5,n=1", "--size", "24", "24", "--quiet"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _fails(capsys, base, "holds no DeepDRRSlicer dataset", foreign)
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _fails(capsys, base, "exists and is not a folder", a_file)
    _fails(capsys, base, "Cannot write to the output folder", a_file / "inside")
    out = tmp_path / "ds"
    assert run(base, out) == 0
    err = _fails(capsys, [*base, "--seed", "3"], "holds a different dataset", out)
    assert "seed" in err
    assert run([*base, "--seed", "3", "--overwrite"], out) == 0
    assert json.loads((out / "plan.json").read_text())["config"]["seed"] == 3
    # the user's own file beside a dataset: --overwrite replaces the dataset and keeps the file
    (out / "notes.txt").write_text("mine")
    assert run([*base, "--seed", "4", "--overwrite"], out) == 0
    assert json.loads((out / "plan.json").read_text())["config"]["seed"] == 4
    assert (out / "notes.txt").read_text() == "mine" and (out / "manifest.csv").is_file()


def test_disk_full_stops_cleanly_and_resumes(serial, tmp_path):
    """A file-size limit makes writes fail the way a full disk does (EFBIG like ENOSPC)."""
    out = tmp_path / "full"
    limit = 150_000   # bytes per file: a shard (3 images, ~200 kB) outgrows it while it is written
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
              "from DeepDRRSlicerLib.cli import main\n"
              f"sys.exit(main({[*BASE, '--out', str(out)]!r}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "Cannot write the dataset" in done.stderr and "File too large" in done.stderr
    assert "rerun the same command" in done.stderr
    tars = sorted(p.name for p in (out / "shards").glob("*.tar"))
    for name in tars:
        record = json.loads((out / "shards" / name.replace(".tar", ".json")).read_text())
        assert hashlib.sha256((out / "shards" / name).read_bytes()).hexdigest() == record["sha256"]
    assert tars == [] and not (out / "manifest.csv").exists()
    assert (out / "shards" / "shard-000000.tar.partial").stat().st_size <= limit   # kept for the resume
    assert run(BASE, out) == 0
    assert digests(out) == digests(serial)


# ---- specification parsing -----------------------------------------------------------------------
def test_sampling_grammar():
    from DeepDRRSlicerLib.dataset.spec import parse_randomize, parse_sample

    grid = parse_sample("alpha=-40:110/16,beta=-30:30/3,sid=1000")
    assert grid.is_grid and len(grid.parameters["alpha"].grid_values()) == 16
    rng = np.random.default_rng(0)
    draws = parse_randomize("kvp=70:120:log")["kvp"].draw(rng, 4000)
    assert draws.min() >= 70 and draws.max() <= 120
    # log-uniform: the median is the geometric mean, not the arithmetic one
    assert np.median(draws) == pytest.approx(np.sqrt(70 * 120), rel=0.03)
    choice = parse_randomize("kvp=80|100")["kvp"].draw(rng, 1000)
    assert set(np.unique(choice)) == {80.0, 100.0}


def test_a_grid_covers_every_combination(tmp_path):
    out = tmp_path / "grid"
    assert run(["generate", "--ct", CT, "--sample", "alpha=-30:30/3,beta=-10:10/2", "--size", "24", "24",
                "--quiet"], out) == 0
    import csv

    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pairs = sorted((float(r["alpha_deg"]), float(r["beta_deg"])) for r in rows)
    assert pairs == sorted((a, b) for a in (-30.0, 0.0, 30.0) for b in (-10.0, 10.0))


def test_randomising_another_parameter_keeps_the_poses(tmp_path):
    base = ["generate", "--ct", CT, "--sample", "alpha=-30:30,n=4", "--size", "24", "24", "--quiet"]
    assert run(base, tmp_path / "a") == 0
    assert run([*base, "--randomize", "kvp=60:100"], tmp_path / "b") == 0
    plans = [json.loads((tmp_path / name / "shards" / "shard-000000.json").read_text()) for name in "ab"]
    assert [r["alpha_deg"] for r in plans[0]["images"]] == [r["alpha_deg"] for r in plans[1]["images"]]
    assert os.path.getsize(tmp_path / "a" / "manifest.csv") < os.path.getsize(tmp_path / "b" / "manifest.csv")


def test_sigterm_stops_a_run_that_the_same_command_resumes(serial, tmp_path):
    out = tmp_path / "terminated"
    command = [sys.executable, "-m", "DeepDRRSlicerLib.cli", *BASE, "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "shards" / "shard-000000.tar").exists():
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived (a very fast machine)")
    assert process.returncode == 130 and "rerun the same command to resume" in err
    assert run(BASE, out) == 0
    assert digests(out) == digests(serial)


def test_a_randomised_sid_or_sod_is_the_pose_recorded_with_each_image(tmp_path):
    from DeepDRRSlicerLib.dataset.torch_data import ShardDataset

    out = tmp_path / "ds"
    assert run(["generate", "--ct", CT, "--sample", "alpha=-10:10,n=2", "--randomize", "sod=500:600,sid=950:1100",
                "--size", "16", "16", "--quiet"], out) == 0
    dataset = ShardDataset(out)
    for index in range(len(dataset)):
        _, geometry_dict, meta, _ = dataset.read_raw(index)
        geometry = DetectorGeometry.from_dict(geometry_dict)
        pose, physics = meta["pose"], meta["physics"]
        assert (pose["sid"], pose["sod"]) == (physics["sid"], physics["sod"]) and pose["sod"] != 530.0
        assert geometry.source_to_detector_mm == pytest.approx(pose["sid"])


@pytest.mark.parametrize("arguments, message", [
    (["--sample", "alpha=110:-40,n=2"], "runs from high to low"),
    (["--sample", "alpha=0,n=2", "--randomize", "kvp=120:70"], "runs from high to low"),
    (["--sample", "alpha=0,n=2", "--randomize", "sid=529.5:1100"], "SID of 529.5 mm with an SOD of 530 mm"),
    (["--sample", "alpha=0,sod=400:600,n=2", "--randomize", "sid=550:1100"], "--sample sod=400:600"),
    (["--sample", "alpha=0,n=2", "--randomize", "filtration.Xx=1:2"], "Unknown filter 'Xx'"),
    (["--sample", "alpha=0,n=2", "--randomize", "filtration.Cu=0:200"], "no usable image"),
    (["--sample", "alpha=0,n=2", "--randomize", "mas=0.1:1:log"], "Add noisy or final to --stages"),
    (["--sample", "alpha=0,n=2", "--stages", "primary,scatter", "--randomize", "electronic_noise_keV=1:3"],
     "no stage in --stages primary,scatter uses it"),
    (["--sample", "alpha=0,n=2", "--stages", "primary,noisy", "--randomize", "scatter_photons=1000:5000"],
     "Add scatter or total to --stages"),
    (["--sample", "alpha=0,n=2", "--stages", "primary,total", "--randomize", "grid_ratio=8:12"],
     "without an anti-scatter grid"),
])
def test_impossible_ranges_are_refused_before_anything_is_written(tmp_path, capsys, arguments, message):
    """Also settings that no chosen stage uses: their draws would be recorded but change nothing."""
    out = tmp_path / "ds"
    _fails(capsys, ["generate", "--ct", CT, "--size", "8", "8", "--quiet", *arguments], message, out)
    assert not out.exists()


@pytest.mark.parametrize("poses, randomize, message", [
    ([{"alpha": 0}, {"alpha": 5, "sid": 400, "sod": 530}], [], "pose 1: its sid 400 mm and its sod 530 mm"),
    ([{"alpha": 0, "sid": 1000}], ["--randomize", "sod=900:1100"],
     "pose 0: its sid 1000 mm and --randomize sod=900:1100 can draw an SID of 1000 mm with an SOD of 1100 mm"),
    ([{"alpha": 0, "sod": 1200}], [], "pose 0: the default SID"),
])
def test_pose_file_distances_that_meet_are_refused_naming_the_pose(tmp_path, capsys, poses, randomize, message):
    path = tmp_path / "poses.json"
    path.write_text(json.dumps(poses))
    out = tmp_path / "ds"
    _fails(capsys, ["generate", "--ct", CT, "--poses", str(path), "--size", "8", "8", "--quiet", *randomize],
           message, out)
    assert not out.exists()


def test_workers_stop_when_the_run_is_killed(tmp_path):
    """SIGKILL to the command (no chance to clean up): its worker processes notice and exit instead of
    writing on into the dataset, where a resumed run would race them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ds"
    command = [sys.executable, "-m", "DeepDRRSlicerLib.cli", "generate", "--ct", CT, "--sample", "alpha=-30:30,n=60",
               "--size", "64", "64", "--shard-size", "10", "--workers", "2", "--quiet", "--out", str(out)]
    run_ = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any((out / "shards").glob("*shard-*")):
        time.sleep(0.2)
    assert any((out / "shards").glob("*shard-*")), "the workers never started writing"
    run_.kill()
    run_.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(run_.pid, 0)   # any process of the run's group still alive?
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(run_.pid, signal.SIGKILL)
        raise AssertionError("worker processes outlived the killed run")
    assert main([*command[3:-2], "--out", str(out)]) == 0   # and the rerun finishes the dataset


def test_a_randomised_setting_is_accepted_when_a_chosen_stage_uses_it(tmp_path):
    out = tmp_path / "ds"
    assert run(["generate", "--ct", CT, "--sample", "alpha=-10:10,n=2", "--stages", "primary,noisy",
                "--randomize", "mas=0.1:1:log", "--size", "8", "8", "--quiet"], out) == 0
    from DeepDRRSlicerLib.dataset.torch_data import ShardDataset

    dataset = ShardDataset(out)
    drawn = {dataset.read_raw(index)[2]["physics"]["mas"] for index in range(len(dataset))}
    assert len(drawn) == 2 and all(0.1 <= mas <= 1.0 for mas in drawn)


def test_ray_without_a_cluster_is_refused_before_the_folder_is_claimed(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install .[ray]); not installed here")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "ds"
    _fails(capsys, ["generate", "--ct", CT, "--sample", "alpha=0,n=1", "--size", "8", "8", "--quiet", "--ray", "auto"],
           "Cannot connect to the Ray cluster", out)
    assert not out.exists()
