"""Batch registration with Dask: broken pairs, resume, early stop, CLI and a killed worker."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("distributed")

from napari_comir import api  # noqa: E402
from napari_comir.batch import run_batch  # noqa: E402
from napari_comir.cli import main  # noqa: E402
from napari_comir.core.errors import InputError, ModelFileError  # noqa: E402
from napari_comir.core.io import read_image, write_tiff  # noqa: E402
from napari_comir.core.synthetic import misaligned_pair  # noqa: E402

SIZE = (128, 128)


def _write_pairs(folder, n_good: int, broken: bool = True):
    """Write ``n_good`` synthetic pairs (+ a missing file and a truncated TIFF) and their CSV."""
    rows = []
    for i in range(n_good):
        bf, shg, _ = misaligned_pair(SIZE, seed=i, angle_deg=7.0 * i, translation_xy=(3, -2))
        write_tiff(folder / f"bf{i}.tif", bf)
        write_tiff(folder / f"shg{i}.tif", shg)
        rows.append((f"p{i}", f"shg{i}.tif", f"bf{i}.tif"))
    if broken:
        data = (folder / "bf0.tif").read_bytes()
        (folder / "truncated.tif").write_bytes(data[: len(data) // 3])
        rows += [("missing", "nope.tif", "bf0.tif"), ("corrupt", "shg0.tif", "truncated.tif")]
    path = folder / "pairs.csv"
    path.write_text("name,shg_file,bf_file\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def _results(out):
    with open(out / "results.csv", newline="") as handle:
        return {row["pair"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def scheduler():
    """An in-process (threads) cluster: fast to start; worker loss is tested separately."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def model_path(tmp_path, tiny_model):
    return str(api.save_model(tiny_model, tmp_path / "m"))


def test_broken_pairs_are_recorded_and_rerun_skips_done(tmp_path, scheduler, model_path):
    pairs = _write_pairs(tmp_path, 3)
    out = tmp_path / "out"
    events = list(run_batch(pairs, model_path, out, scheduler=scheduler))
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 5]
    assert events[-1].result["ok"] == 3 and events[-1].result["errors"] == 2
    rows = _results(out)
    assert [rows[f"p{i}"]["status"] for i in range(3)] == ["ok"] * 3
    assert json.loads(rows["p0"]["matrix_xy"])[2] == [0.0, 0.0, 1.0]
    assert rows["missing"]["status"] == rows["corrupt"]["status"] == "error"
    assert "no such image file" in rows["missing"]["error"]
    assert "cannot read the image" in rows["corrupt"]["error"]

    before = {p.name: p.read_text() for p in (out / "pairs").glob("p*.json")}
    summary = list(run_batch(pairs, model_path, out, scheduler=scheduler))[-1].result
    assert summary["skipped"] == 3 and summary["errors"] == 2  # only the broken pairs ran again
    assert {p.name: p.read_text() for p in (out / "pairs").glob("p*.json")} == before
    assert len(_results(out)) == 5


def test_stopping_early_keeps_finished_pairs_and_a_rerun_completes(tmp_path, scheduler, model_path):
    pairs = _write_pairs(tmp_path, 4, broken=False)
    out = tmp_path / "out"
    events = run_batch(pairs, model_path, out, scheduler=scheduler)
    first = next(events)
    events.close()
    assert list(_results(out)) == [first.message.split(":")[0]]  # CSV written on close
    summary = list(run_batch(pairs, model_path, out, scheduler=scheduler))[-1].result
    assert summary["skipped"] >= 1 and summary["ok"] == 4 and summary["errors"] == 0


def test_model_object_changed_settings_and_resampled_output(tmp_path, scheduler, tiny_model):
    pairs = _write_pairs(tmp_path, 2, broken=False)
    out = tmp_path / "out"
    list(run_batch(pairs, tiny_model, out, scheduler=scheduler))
    assert (out / "model.json").is_file()
    # Asking for resampled images (or other settings) reruns pairs that lack them.
    events = list(run_batch(pairs, tiny_model, out, scheduler=scheduler, resampled=True))
    summary = events[-1].result
    assert summary["skipped"] == 0 and summary["ok"] == 2
    assert read_image(out / "resampled" / "p1.tif").shape == SIZE + (3,)


def test_resampled_tiles_compressed_as_asked_and_a_new_choice_rewrites_them(tmp_path, scheduler,
                                                                               model_path, capsys):
    import tifffile

    pairs = _write_pairs(tmp_path, 1, broken=False)
    out = tmp_path / "out"

    def compression():
        with tifffile.TiffFile(out / "resampled" / "p0.tif") as tiff:
            return tiff.pages[0].compression.name

    list(run_batch(pairs, model_path, out, scheduler=scheduler, resampled=True))
    assert compression() == "JPEG"  # "auto": 8-bit RGB bright field, as scanners write it
    status = main(["batch", str(pairs), "--model", model_path, "--out", str(out), "--scheduler",
                   scheduler, "--resampled", "--compression", "zlib"])
    assert status == 0 and "1/1 pairs ok (0 already done)" in capsys.readouterr().out
    assert compression() == "ADOBE_DEFLATE"
    with pytest.raises(InputError, match="compression must be one of"):
        run_batch(pairs, model_path, out, resampled=True, compression="gif")


def test_cli_batch(tmp_path, scheduler, model_path, capsys):
    pairs = _write_pairs(tmp_path, 1)
    status = main(["batch", str(pairs), "--model", model_path, "--out", str(tmp_path / "out"),
                   "--scheduler", scheduler, "--rotation-range", "30"])
    assert status == 1  # some pairs failed
    assert "1/3 pairs ok (0 already done), 2 failed" in capsys.readouterr().out
    assert _results(tmp_path / "out")["p0"]["rotation_range"] == "30.0"
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    assert "napari-comir batch pairs.csv --model bf-shg --out results/" in capsys.readouterr().out


@pytest.mark.parametrize("csv_text, message", [
    ("name,shg_file\np,a.tif\n", "bf_file"),
    ("name,shg_file,bf_file\n", "at least one row"),
    ("name,shg_file,bf_file\np,a.tif,b.tif\np,c.tif,d.tif\n", "names must be unique"),
    ("name,shg_file,bf_file\np,,b.tif\n", "empty shg_file"),
])
def test_bad_pairs_csv_fails_before_starting(tmp_path, model_path, csv_text, message):
    (tmp_path / "pairs.csv").write_text(csv_text)
    with pytest.raises(InputError, match=message):
        run_batch(tmp_path / "pairs.csv", model_path, tmp_path / "out")


def test_bad_model_or_settings_fail_before_starting(tmp_path, model_path):
    pairs = _write_pairs(tmp_path, 1, broken=False)
    with pytest.raises(ModelFileError, match="unknown model"):
        run_batch(pairs, "no-such-model", tmp_path / "out")
    with pytest.raises(InputError, match="method"):
        run_batch(pairs, model_path, tmp_path / "out", method="magic")
    with pytest.raises(InputError, match="rotation_range"):
        run_batch(pairs, model_path, tmp_path / "out", rotation_range=float("nan"))


def test_killed_worker_loses_no_pair(tmp_path, model_path):
    """Real 2-process LocalCluster on 127.0.0.1 (the default cluster); SIGKILL one worker."""
    psutil = pytest.importorskip("psutil")
    n = 8
    pairs = _write_pairs(tmp_path, n, broken=False)
    out = tmp_path / "out"
    events = run_batch(pairs, model_path, out, n_workers=2)
    first = next(events)  # both workers are up and busy with the remaining pairs now
    workers = [p for p in psutil.Process().children(recursive=True)
               if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2
    victim = workers[0]
    victim.kill()
    victim.wait(10)
    rest = list(events)
    assert first.step == 1 and rest[-1].result["ok"] == n and rest[-1].result["errors"] == 0
    assert not victim.is_running()
    rows = _results(out)
    assert all(row["status"] == "ok" for row in rows.values()) and len(rows) == n


def test_resume_sees_replaced_content_and_one_batch_per_folder(tmp_path, scheduler, model_path):
    """A record is reused only for the same image *content*; a second batch into a folder that
    is being written is refused; a stale lock is taken over; results.csv lists every record."""
    import socket

    from napari_comir.core.io.files import process_tag

    pairs = _write_pairs(tmp_path, 2, broken=False)
    out = tmp_path / "out"
    list(run_batch(pairs, model_path, out, scheduler=scheduler))
    first = json.loads((out / "pairs" / "p1.json").read_text())
    bf, _, _ = misaligned_pair(SIZE, seed=5, angle_deg=40.0)  # the same path, new content
    write_tiff(tmp_path / "bf1.tif", bf)
    *_, last = run_batch(pairs, model_path, out, scheduler=scheduler)
    assert last.result["skipped"] == 1  # p0 reused, p1 redone
    assert json.loads((out / "pairs" / "p1.json").read_text())["moving_fingerprint"] != \
        first["moving_fingerprint"]

    (out / ".batch.lock").write_text(process_tag() + "\n")  # alive: us
    with pytest.raises(InputError, match="another batch"):
        list(run_batch(pairs, model_path, out, scheduler=scheduler))
    (out / ".batch.lock").write_text(f"999999999-0@{socket.gethostname()}\n")  # a dead process
    list(run_batch(pairs, model_path, out, scheduler=scheduler))
    assert not (out / ".batch.lock").exists()

    other = tmp_path / "other.csv"
    other.write_text("name,shg_file,bf_file\nq,shg0.tif,bf0.tif\n")
    list(run_batch(other, model_path, out, scheduler=scheduler))
    assert set(_results(out)) == {"q", "p0", "p1"}


def test_locks_of_other_hosts_folders_and_reused_ids(tmp_path):
    """Another host's lock is refused, not deleted as stale (before: deleted, and two nodes
    wrote one folder); a lock that is a folder is refused in one line (before: a traceback); a
    lock whose process id was reused by a later process is taken over (before: refused for
    ever)."""
    import os
    import socket

    from napari_comir.batch.records import LOCK_NAME, RecordStore
    from napari_comir.core.io.files import process_tag

    store = RecordStore(tmp_path)
    lock = tmp_path / LOCK_NAME
    lock.write_text(f"{os.getpid()}-0@another-node.cluster\n")
    with pytest.raises(InputError, match="its lock names '.*another-node.cluster'.*delete"):
        with store.lock():
            pass
    assert lock.read_text().endswith("@another-node.cluster\n")  # kept
    lock.unlink()
    lock.mkdir()
    with pytest.raises(InputError, match="is not a lock file"):
        with store.lock():
            pass
    lock.rmdir()
    pid, start = process_tag().split("@")[0].split("-")
    lock.write_text(f"{pid}-{int(start) + 1}@{socket.gethostname()}\n")  # our id, an earlier start
    with store.lock():
        assert lock.read_text() == process_tag() + "\n"
    assert not lock.exists()


def test_a_closed_output_pipe_ends_the_batch_promptly(tmp_path, model_path):
    """`napari-comir batch … | head -c 20` used to hang for ever; now it ends within seconds,
    keeping what it finished."""
    import subprocess
    import sys

    pairs = _write_pairs(tmp_path, 3, broken=False)
    command = [sys.executable, "-m", "napari_comir", "batch", str(pairs), "--model", model_path,
               "--out", str(tmp_path / "out"), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    process.stdout.read(20)
    process.stdout.close()  # the reader goes away, like `head -c 20`
    assert process.wait(timeout=90) in (0, 1, 141)
    assert not (tmp_path / "out" / ".batch.lock").exists()


def test_batch_registers_pyramidal_slides_lazily(tmp_path, scheduler):
    """Pyramidal OME-TIFF pairs take the register command's lazy, coarse-to-fine path in a
    worker, and the resampled slide is written as a pyramid."""
    from napari_comir.core.io.slides import open_slide
    from napari_comir.core.tiled_resample import resample_to_file
    from napari_comir.core.transforms import AffineTransform, corner_error

    bf, shg, truth = misaligned_pair((1200, 1200), seed=2, angle_deg=-35.0, translation_xy=(11, 6))
    for name, image in (("shg", shg), ("bf", bf)):
        for _ in resample_to_file(image, AffineTransform.rigid(), image.shape[:2],
                                  tmp_path / f"{name}.ome.tif", pixel_size_um=2.0):
            pass
    (tmp_path / "pairs.csv").write_text("name,shg_file,bf_file\nslide,shg.ome.tif,bf.ome.tif\n")
    *_, last = run_batch(tmp_path / "pairs.csv", "bf-shg", tmp_path / "out", scheduler=scheduler,
                         resampled=True)
    assert last.result["ok"] == 1
    record = json.loads(next((tmp_path / "out" / "pairs").glob("*.json")).read_text())
    found = AffineTransform.from_matrix_xy(record["matrix_xy"])
    assert corner_error(truth, found, bf.shape) < 0.02 * bf.shape[1]
    written = list((tmp_path / "out").rglob("*.tif*"))
    assert len(written) == 1
    with open_slide(written[0]) as registered:
        assert registered.shape[:2] == shg.shape


def test_deformable_batch_writes_each_kept_field(tmp_path, scheduler, bf_shg_dir):
    """`--transform deformable` in a batch: the record lists the affine part and the stage's
    outcome, the kept field is written to fields/<pair>.npz (moving -> fixed, closer to the
    known bend than the affine part), and a rerun redoes a pair whose field file is gone."""
    from napari_comir.core.evaluation import smooth_deformation
    from napari_comir.core.field_transform import DisplacementFieldTransform, resample
    from napari_comir.core.io.transform_formats import read_transform

    name = "sa_stroma_pancreas_2000_86"
    bf, shg = read_image(bf_shg_dir / f"{name}_BF.tif"), read_image(bf_shg_dir / f"{name}_SHG.tif")
    bend = smooth_deformation(shg.shape[:2], 8.0, np.random.default_rng(1))
    write_tiff(tmp_path / "shg.tif", shg)
    write_tiff(tmp_path / "bf.tif", resample(bf, bend.inverse(), shg.shape[:2]))
    (tmp_path / "pairs.csv").write_text("name,shg_file,bf_file\nbent,shg.tif,bf.tif\n")
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "pairs.csv"), "--model", "bf-shg", "--out", str(out),
                 "--scheduler", scheduler, "--transform", "deformable", "--rotation-range", "10"]) == 0
    row = _results(out)["bent"]
    assert row["transform"] == "deformable" and row["deformable"].startswith("field kept"), row
    field = read_transform(row["field"])
    assert isinstance(field, DisplacementFieldTransform) and row["field"].endswith("fields/bent.npz")
    np.testing.assert_allclose(json.loads(row["matrix_xy"]), field.affine.matrix_xy, atol=1e-9)
    moving_xy = np.random.default_rng(2).uniform(100, 412, size=(30, 2))
    error = np.linalg.norm(field.apply_xy(moving_xy) - bend.apply_xy(moving_xy), axis=1)
    affine_error = np.linalg.norm(field.affine.apply_xy(moving_xy) - bend.apply_xy(moving_xy), axis=1)
    assert np.median(error) < 0.6 * np.median(affine_error), (np.median(error), np.median(affine_error))
    *_, last = run_batch(tmp_path / "pairs.csv", "bf-shg", out, scheduler=scheduler,
                         transform="deformable", rotation_range=10.0)
    assert last.result["skipped"] == 1
    (out / "fields" / "bent.npz").unlink()
    *_, last = run_batch(tmp_path / "pairs.csv", "bf-shg", out, scheduler=scheduler,
                         transform="deformable", rotation_range=10.0)
    assert last.result["skipped"] == 0 and (out / "fields" / "bent.npz").is_file()
