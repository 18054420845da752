"""Result folders are replaced whole or not at all, and files the tool did not write are never deleted.

The bad-input catalogue (test_bad_inputs.py) covers the CLI's cases; these tests cover real signals,
leftovers of killed runs, symbolic links and the reusable pieces (OutputFolder, atomic_output).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from DeepDRRSlicerLib.errors import InputError
from DeepDRRSlicerLib.output import OutputFolder, _interrupts_deferred, atomic_output, result_files

from bad_inputs import digest, phantom_hu, write_image

REPO = Path(__file__).resolve().parents[2]


def _run_cli(tmp_path, *arguments, prelude="", cwd=None):
    """The CLI in a fresh process, after ``prelude`` (Python code that may patch the writer)."""
    ct = tmp_path / "ct.nii.gz"
    if not ct.exists():
        write_image(ct, phantom_hu())
    code = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import sys
        from DeepDRRSlicerLib.cli import main
        sys.exit(main(["simulate", "--quiet", "--ct", {str(ct)!r}, "--size", "16", "16", *{list(map(str, arguments))!r}]))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=cwd or tmp_path)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_real_signal_while_writing_leaves_the_previous_result(tmp_path, signal_name):
    out = tmp_path / "out"
    first = _run_cli(tmp_path, "--out", out)
    assert first.returncode == 0, first.stderr
    before = digest(out)
    prelude = f"""
        import os, signal
        import numpy as np
        from DeepDRRSlicerLib import output
        real = output._write_files
        def write_then_signal(result, folder, parameters):
            np.save(folder / "primary.npy", np.zeros(4))
            os.kill(os.getpid(), signal.{signal_name})
            return real(result, folder, parameters)
        output._write_files = write_then_signal
    """
    second = _run_cli(tmp_path, "--out", out, "--alpha", "40", prelude=prelude)
    assert second.returncode == 130, second.stderr
    assert "cancelled" in second.stderr and "Traceback" not in second.stderr
    assert digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "out"], "a partial folder was left"


def test_interrupts_are_held_during_the_swap_and_raised_after():
    held = False
    with pytest.raises(KeyboardInterrupt):
        with _interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            held = True  # reached: the signal did not interrupt the block
    assert held


def test_leftovers_of_killed_runs_are_removed_but_not_those_of_live_ones(tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / ".out.partial-999999999-abcd"   # no such process
    alive = tmp_path / f".out.partial-{os.getppid()}-abcd"
    unrelated = tmp_path / ".other.partial-999999999-abcd"
    for folder in (dead, alive, unrelated):
        folder.mkdir()
        (folder / "primary.npy").write_bytes(b"half")
    with atomic_output(out) as staging:
        (staging / "summary.json").write_text(json.dumps({"written_by": "deepdrr-slicer", "files": ["summary.json"]}))
    assert not dead.exists() and alive.exists() and unrelated.exists()


def test_a_symlinked_output_folder_stays_a_link(tmp_path):
    target = tmp_path / "real_results"
    link = tmp_path / "results"
    assert _run_cli(tmp_path, "--out", target).returncode == 0
    link.symlink_to(target, target_is_directory=True)
    again = _run_cli(tmp_path, "--out", link, "--mode", "line-integral")
    assert again.returncode == 0, again.stderr
    assert link.is_symlink() and (target / "line_integral.npy").is_file() and not (target / "primary.npy").exists()


def test_overwrite_keeps_the_users_files_and_says_so(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "primary.png").write_text("my own picture")  # same name as a result file
    done = _run_cli(tmp_path, "--out", out, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "primary.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((out / "summary.json").read_text())
    assert "notes.txt" not in summary["files"] and "primary.png" in summary["files"]
    # a later run into the folder is refused again without --overwrite: notes.txt is still the user's
    assert _run_cli(tmp_path, "--out", out).returncode == 2


def test_quiet_hides_notes_that_a_normal_run_prints(tmp_path):
    loud = _run_cli(tmp_path, "--out", tmp_path / "a")
    assert loud.returncode == 0 and "note:" not in loud.stderr  # --quiet is in _run_cli
    code = (f"import sys; from DeepDRRSlicerLib.cli import main; sys.exit(main(['simulate', '--ct', "
            f"{str(tmp_path / 'ct.nii.gz')!r}, '--size', '16', '16', '--out', {str(tmp_path / 'b')!r}]))")
    noisy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert noisy.returncode == 0 and "note:" in noisy.stderr, "without --quiet the CPU fallback note shows"


def test_atomic_output_for_another_writer(tmp_path):
    """A dataset writer can reuse the machinery with its own idea of what it wrote."""
    def recognise(folder):
        index = folder / "index.json"
        return set(json.loads(index.read_text())) | {"index.json"} if index.is_file() else None

    out = tmp_path / "dataset"
    with atomic_output(out, recognise=recognise, argument="--dataset") as staging:
        for n in range(3):
            np.save(staging / f"image_{n}.npy", np.full(2, n))
        (staging / "index.json").write_text(json.dumps([f"image_{n}.npy" for n in range(3)]))
    assert recognise(out) == {"image_0.npy", "image_1.npy", "image_2.npy", "index.json"}
    with pytest.raises(RuntimeError):
        with atomic_output(out, recognise=recognise) as staging:
            (staging / "index.json").write_text("[]")
            raise RuntimeError("the writer failed")
    assert recognise(out) == {"image_0.npy", "image_1.npy", "image_2.npy", "index.json"}
    (out / "README.txt").write_text("the user's")
    with pytest.raises(InputError, match="--dataset"):
        OutputFolder(out, recognise=recognise, argument="--dataset")


def test_results_written_before_the_manifest_existed_are_recognised(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "primary.npy").write_bytes(b"x")
    (old / "summary.json").write_text(json.dumps({"versions": {"DeepDRRSlicerLib": "0.1.0"}}))
    assert result_files(old) == {"primary.npy", "summary.json"}
    (old / "mine.txt").write_text("x")
    with pytest.raises(InputError, match="holds a previous result plus files it did not write"):
        OutputFolder(old)


def test_the_working_folder_is_updated_in_place_not_renamed(tmp_path):
    out = tmp_path / "here"
    out.mkdir()
    inode = out.stat().st_ino
    for mode in ("polychromatic", "line-integral"):
        done = _run_cli(tmp_path, "--out", ".", "--mode", mode, cwd=out)
        assert done.returncode == 0, done.stderr
    assert out.stat().st_ino == inode, "the folder a shell sits in must not be swapped for another"
    assert (out / "line_integral.npy").is_file() and not (out / "primary.npy").exists()
