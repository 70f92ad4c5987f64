"""Property-based fuzzing of the CLI contract: whatever images and options are drawn, `register`
exits 0 with a result, or 2 with exactly one line — never a traceback, never a changed input.

A small share runs in CI (``max_examples`` below); raise it locally for a longer run.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_comir import api
from napari_comir.cli import main

#: Cases per test in CI; benchmarks/fuzz.py sets $NAPARI_COMIR_FUZZ_EXAMPLES for a longer run.
_SCALE = int(os.environ.get("NAPARI_COMIR_FUZZ_EXAMPLES", "0"))
FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
EXAMPLES = {name: _SCALE or n for name, n in {"register": 12, "train": 15, "batch": 8, "card": 25,
                                                    "outputs": 8}.items()}

shapes = st.tuples(st.integers(1, 200), st.integers(1, 200))
dtypes = st.sampled_from([np.uint8, np.uint16, np.float32, np.int16])
options = st.fixed_dictionaries({}, optional={
    "--transform": st.sampled_from(["rigid", "similarity", "affine", "projective", ""]),
    "--rotation-range": st.sampled_from(["0", "30", "180", "-5", "nan", "1e9"]),
    "--scale-range": st.sampled_from([("0.9", "1.1"), ("0.2", "1"), ("1.2", "1.1"), ("0.5", "2")]),
    "--fixed-pixel-size": st.sampled_from(["0.5", "0", "-1", "nan", "abc"]),
    "--moving-pixel-size": st.sampled_from(["0.5", "0.6", "0", "inf"]),
    "--method": st.sampled_from(["search", "sift", "magic"]),
})


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    tiny = api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 4, "depth": 2})
    return str(api.save_model(tiny, tmp_path_factory.mktemp("fuzz-model") / "m"))


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@settings(max_examples=EXAMPLES["register"], **FUZZ)
@given(fixed_shape=shapes, moving_shape=shapes, fixed_type=dtypes, moving_type=dtypes,
       moving_rgb=st.booleans(), chosen=options, seed=st.integers(0, 2**16))
def test_register_exits_0_or_2_with_one_line(tmp_path, capsys, model_file, fixed_shape,
                                             moving_shape, fixed_type, moving_type, moving_rgb,
                                             chosen, seed):
    rng = np.random.default_rng(seed)
    fixed = (rng.random(fixed_shape) * 200).astype(fixed_type)
    moving = (rng.random(moving_shape + ((3,) if moving_rgb else ())) * 200).astype(moving_type)
    tifffile.imwrite(tmp_path / "fixed.tif", fixed)
    tifffile.imwrite(tmp_path / "moving.tif", moving, photometric="rgb" if moving_rgb else None)
    before = {name: _digest(tmp_path / name) for name in ("fixed.tif", "moving.tif")}
    argv = ["register", "--fixed", str(tmp_path / "fixed.tif"), "--moving",
            str(tmp_path / "moving.tif"), "--model", model_file, "--out", str(tmp_path / "r.json")]
    for flag, value in chosen.items():
        argv += [flag, *value] if isinstance(value, tuple) else [flag, value]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals (a non-number for a number, a bad choice)
        status = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert status in (0, 2), (status, err)
    if status == 0:
        assert (tmp_path / "r.json").is_file()
    elif err.startswith("napari-comir register: error:"):
        assert err.count("\n") == 1, err
    assert {name: _digest(tmp_path / name) for name in before} == before
    _log("register", status)


# ----------------------------------------------------------------------------- helpers


def _run(argv, capsys) -> tuple[int, str]:
    """``napari-comir argv`` in this process: (exit status, stderr)."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals (a non-number for a number, a bad choice)
        status = exc.code
    return status, capsys.readouterr().err


def _log(test: str, status: int) -> None:
    """With $NAPARI_COMIR_FUZZ_LOG set (benchmarks/fuzz.py), append the case's outcome there."""
    if os.environ.get("NAPARI_COMIR_FUZZ_LOG"):
        with open(os.environ["NAPARI_COMIR_FUZZ_LOG"], "a") as log:
            log.write(f"{test},{status}\n")


def _assert_contract(status, err, command) -> None:
    """Exit 0, or exit 2 with exactly one line (after argparse's usage, for its own refusals);
    never a traceback."""
    assert "Traceback" not in err, err
    assert status in (0, 2), (status, err)
    if status == 2:
        _assert_one_line(err, command)


def _assert_one_line(err: str, command: str) -> None:
    lines = err.splitlines()
    assert lines and lines[-1].startswith(f"napari-comir {command}: error:"), err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err


@pytest.fixture(scope="module")
def aligned_files(tmp_path_factory):
    """A small aligned BF/SHG pair as TIFFs, and CSVs listing it in good and bad ways."""
    folder = tmp_path_factory.mktemp("fuzz-train")
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "shg.tif", (rng.random((72, 80)) * 255).astype(np.uint8))
    tifffile.imwrite(folder / "bf.tif", (rng.random((72, 80, 3)) * 255).astype(np.uint8),
                     photometric="rgb")
    tifffile.imwrite(folder / "small.tif", (rng.random((40, 40)) * 255).astype(np.uint8))
    csvs = {
        "good": "name,shg_file,bf_file,split\np,shg.tif,bf.tif,train\n",
        "short": "name,shg_file,bf_file\np,shg.tif\n",
        "long": "name,shg_file,bf_file\np,shg.tif,bf.tif,extra\n",
        "quote": 'name,shg_file,bf_file\n"p,shg.tif,bf.tif\n',
        "missing_column": "name,shg_file\np,shg.tif\n",
        "missing_file": "name,shg_file,bf_file\np,nope.tif,bf.tif\n",
        "sizes_differ": "name,shg_file,bf_file\np,small.tif,bf.tif\n",
        "header_only": "name,shg_file,bf_file\n",
        "empty": "",
        "bom": "\ufeffname,shg_file,bf_file\np,shg.tif,bf.tif\n",
        "image_as_text": "name,shg_file,bf_file\np,pairs-good.csv,bf.tif\n",
    }
    for name, text in csvs.items():
        (folder / f"pairs-{name}.csv").write_text(text, encoding="utf-8")
    (folder / "pairs-latin1.csv").write_bytes("name,shg_file,bf_file\nç,shg.tif,bf.tif\n".encode("latin-1"))
    (folder / "pairs-binary.csv").write_bytes(bytes(range(256)) * 4)
    (folder / "garbage.pt").write_bytes(b"\x80\x04not a checkpoint")
    return folder


# ----------------------------------------------------------------------------- train

TINY_TRAIN = {"--steps": "1", "--batch-size": "2", "--patch-size": "32", "--base-channels": "2",
              "--depth": "1"}
TRAIN_VALUES = {
    "--steps": st.sampled_from(["1", "2", "0", "-3", "x", "1e3"]),
    "--batch-size": st.sampled_from(["2", "3", "1", "0", "-2"]),
    "--patch-size": st.sampled_from(["32", "16", "15", "0", "73", "4097"]),
    "--base-channels": st.sampled_from(["1", "2", "0", "-4", "65"]),
    "--depth": st.sampled_from(["1", "2", "0", "-2", "7", "12"]),
    "--comir-channels": st.sampled_from(["1", "3", "0", "4", "9"]),
    "--lr": st.sampled_from(["1e-3", "0", "-1", "nan", "inf", "1e300", "abc"]),
    "--max-seconds": st.sampled_from(["30", "0", "-1", "nan", "inf"]),
    "--equivariance-weight": st.sampled_from(["0", "0.3", "-1", "nan", "inf"]),
    "--activation-penalty": st.sampled_from(["1e-4", "0", "-1", "nan"]),
    "--checkpoint-every": st.sampled_from(["1", "0", "-1"]),
    "--optimizer": st.sampled_from(["adam", "sgd", "lbfgs"]),
    "--split": st.sampled_from(["train", "test"]),
    "--device": st.sampled_from(["cpu", "quantum", "cuda:99"]),
    "--preset": st.sampled_from(["bf-shg", "rgb-nir", "x"]),
    "--synthetic": st.sampled_from(["0", "-1", "100000"]),
    "--seed": st.sampled_from(["0", "-1", "x"]),
    "--checkpoint": st.sampled_from(["{tmp}/ck.pt", "{tmp}/no/ck.pt", "{files}/shg.tif", "{tmp}"]),
    "--resume": st.sampled_from(["{tmp}/none.pt", "{files}/garbage.pt", "{files}/shg.tif"]),
}
# A few options changed at a time from a tiny valid run: most cases then train, or fail on one thing.
train_options = st.lists(st.sampled_from(sorted(TRAIN_VALUES)).flatmap(
    lambda flag: st.tuples(st.just(flag), TRAIN_VALUES[flag])), max_size=3).map(dict)
GOOD_PAIR = ["--fixed", "{files}/shg.tif", "--moving", "{files}/bf.tif"]
train_sources = st.one_of(  # a branch each: about half the cases have good data
    st.just(["--pairs", "{files}/pairs-good.csv"]), st.just(GOOD_PAIR),
    st.sampled_from(["short", "long", "quote", "missing_column", "missing_file", "sizes_differ",
                     "header_only", "empty", "bom", "image_as_text", "latin1", "binary",
                     "nothing"]).map(lambda name: ["--pairs", f"{{files}}/pairs-{name}.csv"]),
    st.tuples(st.sampled_from(["shg.tif", "bf.tif", "small.tif", "nope.tif", "pairs-good.csv"]),
              st.sampled_from(["bf.tif", "shg.tif", "small.tif", "nope.tif"])).map(
        lambda p: ["--fixed", f"{{files}}/{p[0]}", "--moving", f"{{files}}/{p[1]}"]),
    st.just([]),
)
train_outputs = st.one_of(
    st.just(["--out", "{tmp}/model"]), st.just(["--save-as", "fuzzed"]),
    st.sampled_from([["--out", "{tmp}/no/model"], ["--out", "{tmp}"], ["--save-as", "../escape"],
                     ["--save-as", ""]]))


@settings(max_examples=EXAMPLES["train"], **FUZZ)
@given(source=train_sources, chosen=train_options, output=train_outputs)
def test_train_exits_0_or_2_with_one_line(tmp_path_factory, capsys, aligned_files, source, chosen,
                                          output):
    tmp = tmp_path_factory.mktemp("train")
    before = {p.name: _digest(p) for p in aligned_files.iterdir()}
    options = {**TINY_TRAIN, **chosen}
    argv = ["train", *source, *[item for pair in options.items() for item in pair], *output]
    argv = [a.format(tmp=tmp, files=aligned_files) for a in argv]
    status, err = _run(argv, capsys)
    _assert_contract(status, err, "train")
    if status == 0:  # a whole model that loads, with finite weights
        import torch

        from napari_comir.core.zoo import model_file_paths

        path = (model_file_paths(argv[argv.index("--out") + 1])[1] if "--out" in argv
                else api.list_models()["fuzzed"])
        model = api.load_model(str(path), "cpu")
        assert all(torch.isfinite(p).all() for p in model.parameters())
    assert {name: _digest(aligned_files / name) for name in before} == before
    _log("train", status)


# ----------------------------------------------------------------------------- model cards

DELETE = object()
CARD_FIELDS = [("format",), ("name",), ("modalities",), ("fixed_modality",), ("moving_modality",),
               ("comir_channels",), ("tau",), ("critic",), ("architecture",), ("architecture", "type"),
               ("architecture", "base_channels"), ("architecture", "depth"), ("c4_average",),
               ("score_threshold",), ("detail_threshold",), ("version",), ("description",),
               ("training",), ("metrics",), ("sha256",), ("modalities", "bf"),
               ("modalities", "bf", "channels"), ("modalities", "bf", "log1p"),
               ("modalities", "bf", "percentiles"), ("modalities", "bf", "grey_palette"),
               ("modalities", "shg", "channels"), ("modalities", "shg", "percentiles")]
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6)
plausible = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 64, 65, 1024, -1, 0.5, 1.0, 99.5, 100.0, -5,
                             "1", "unet", "bf", "shg", [0.5, 99.5], [1, 50, 99], [99.5, 0.5],
                             [-1, 101], [50, 50], [], {}, True, None, 1e308, [[1, 2, 3]] * 33])
card_changes = st.lists(st.tuples(st.sampled_from(CARD_FIELDS),
                                  st.one_of(st.just(DELETE), plausible, json_junk)),
                        min_size=1, max_size=3)


@pytest.fixture(scope="module")
def card_pair(tmp_path_factory):
    """A tiny model's card (a dict) and weights, and a small pair to register with what loads."""
    import json

    folder = tmp_path_factory.mktemp("fuzz-card")
    tiny = api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 2, "depth": 1})
    card = json.loads(api.save_model(tiny, folder / "base").read_text())
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "shg.tif", (rng.random((64, 64)) * 255).astype(np.uint8))
    tifffile.imwrite(folder / "bf.tif", (rng.random((64, 64, 3)) * 255).astype(np.uint8),
                     photometric="rgb")
    return folder, card


def _check_card(folder, text: bytes, capsys) -> int:
    """Load a card (beside the tiny weights) and, if it loads, register and list models with it:
    a one-line ComirError or a result, never another exception."""
    import shutil
    import uuid

    from napari_comir.core.errors import ComirError

    models = folder / uuid.uuid4().hex
    models.mkdir()
    (models / "m.json").write_bytes(text)
    shutil.copy(folder / "base.safetensors", models / "m.safetensors")
    try:
        api.load_model(str(models / "m.json"), "cpu")
    except ComirError as exc:
        assert "\n" not in str(exc), str(exc)
    argv = ["register", "--fixed", str(folder / "shg.tif"), "--moving", str(folder / "bf.tif"),
            "--model", str(models / "m.json"), "--out", str(models / "r.json"),
            "--transform", "rigid", "--rotation-range", "10"]
    status, err = _run(argv, capsys)
    _assert_contract(status, err, "register")
    os.environ["NAPARI_COMIR_MODELS_DIR"] = str(models)  # the card among the user models
    listed, err = _run(["models"], capsys)
    _assert_contract(listed, err, "models")
    return status


@settings(max_examples=EXAMPLES["card"], **FUZZ)
@given(changes=card_changes)
def test_drawn_model_cards_load_or_fail_with_one_line(card_pair, capsys, monkeypatch, changes):
    import copy
    import json

    folder, base = card_pair
    card = copy.deepcopy(base)
    for path, value in changes:
        parent = card
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if value is DELETE:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    with monkeypatch.context() as patch:
        patch.setenv("NAPARI_COMIR_MODELS_DIR", str(folder))
        _log("card", _check_card(folder, json.dumps(card).encode(), capsys))


@pytest.mark.parametrize("text", [
    b'{"format": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested 100 000 deep
    b"[" * 100_000, b"\xff\xfe\x00{", b"", b"null", b"1e999", b'{"format": 1e999}',
    b'{"format": 1, "name": "m", "modalities": {"bf": {"channels": 1e999}}}',
], ids=["deep", "deep-open", "utf16", "empty", "null", "inf", "format-inf", "channels-inf"])
def test_raw_model_card_texts(card_pair, capsys, monkeypatch, text):
    monkeypatch.setenv("NAPARI_COMIR_MODELS_DIR", str(card_pair[0]))
    assert _check_card(card_pair[0], text, capsys) == 2


# ----------------------------------------------------------------------------- batch

batch_options = st.lists(st.sampled_from([
    ("--workers", "1"), ("--workers", "0"), ("--workers", "-1"), ("--workers", "x"),
    ("--workers", "1025"), ("--threads-per-worker", "0"), ("--threads-per-worker", "-1"),
    ("--threads-per-worker", "2"), ("--method", "sift"), ("--method", "magic"),
    ("--transform", "rigid"), ("--rotation-range", "nan"), ("--rotation-range", "10"),
    ("--rotation-range", "-5"), ("--scale-range", ("1.2", "1.1")), ("--scale-range", ("0.9", "1.1")),
    ("--fixed-column", "nope"), ("--moving-column", "shg_file"), ("--resampled", None),
    ("--model", "nope"), ("--model", "{files}/pairs-good.csv"),
    ("--scheduler", "nonsense"), ("--scheduler", ""), ("--scheduler", "inproc://x"),
    ("--scheduler", "tcp://host-without-port"), ("--out", "{files}/shg.tif"),
    ("--out", "{files}"),
]), max_size=2)
batch_csvs = st.sampled_from(["good", "good", "short", "long", "quote", "missing_column",
                              "missing_file", "sizes_differ", "header_only", "empty", "bom",
                              "latin1", "binary", "nothing"])


@pytest.fixture(scope="module")
def in_process_scheduler():
    """An in-process Dask cluster for the cases that run (a process cluster takes seconds to start)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@settings(max_examples=EXAMPLES["batch"], **FUZZ)
@given(csv_name=batch_csvs, chosen=batch_options)
def test_batch_exits_0_1_or_2_with_one_line(tmp_path_factory, capsys, aligned_files,
                                            in_process_scheduler, model_file, csv_name, chosen):
    """batch: 0 (all pairs ok), 1 (some failed, each recorded in results.csv) or 2 with one line."""
    import csv

    tmp = tmp_path_factory.mktemp("batch")
    before = {p.name: _digest(p) for p in aligned_files.iterdir() if p.suffix in (".tif", ".csv", ".pt")
              and p.name != "results.csv"}  # the inputs, not what a batch wrote beside them
    options = {"--model": model_file, "--out": "{tmp}/out", "--scheduler": in_process_scheduler,
               **dict(chosen)}
    if options["--scheduler"] == in_process_scheduler:
        options.pop("--workers", None)  # a local process cluster takes seconds to start
        options.pop("--threads-per-worker", None)
    argv = ["batch", f"{{files}}/pairs-{csv_name}.csv"]
    for flag, value in options.items():
        argv += [flag] if value is None else [flag, *value] if isinstance(value, tuple) else [flag, value]
    argv = [a.format(tmp=tmp, files=aligned_files) for a in argv]
    status, err = _run(argv, capsys)
    assert "Traceback" not in err, err
    assert status in (0, 1, 2), (status, err)
    if status == 2:
        _assert_one_line(err, "batch")
    else:
        out = argv[argv.index("--out") + 1]
        with open(f"{out}/results.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and all(row["status"] in ("ok", "error") for row in rows)
        assert (status == 1) == any(row["status"] == "error" for row in rows)
    assert {name: _digest(aligned_files / name) for name in before} == before
    _log("batch", status)


# What each command reads (placeholders into the `_read_inputs` folder), and its output options.
_COMMAND_INPUTS = {
    "register": (["register", "--fixed", "{in}/shg.tif", "--moving", "{in}/z.ome.zarr/bf.tif",
                  "--model", "{in}/m.json", "--out", "{in}/r.json"],
                 ["shg.tif", "z.ome.zarr/bf.tif", "m.json", "m.safetensors", "z.ome.zarr"],
                 ["--out", "--resampled", "--export-itk", "--export-ngff", "--export-csv",
                  "--export-qupath"]),
    "infer": (["infer", "{in}/z.ome.zarr/bf.tif", "--model", "{in}/m.json", "--modality", "bf",
               "--out", "{in}/c.tif"], ["z.ome.zarr/bf.tif", "m.json", "m.safetensors"], ["--out"]),
    "train": (["train", "--pairs", "{in}/pairs.csv", "--from", "{in}/m.json", "--steps", "1",
               "--batch-size", "2", "--patch-size", "32", "--out", "{in}/n"],
              ["pairs.csv", "shg.tif", "z.ome.zarr/bf.tif", "m.json", "m.safetensors"],
              ["--out", "--checkpoint"]),
    "apply": (["apply", "--transform", "{in}/t.json", "--image", "{in}/z.ome.zarr/bf.tif",
               "--like", "{in}/shg.tif", "--out", "{in}/o.tif"],
              ["t.json", "z.ome.zarr/bf.tif", "shg.tif", "z.ome.zarr"], ["--out"]),
}


@pytest.fixture(scope="module")
def read_inputs(tmp_path_factory, model_file):
    """Inputs every drawn command reads: images (the moving one inside an OME-Zarr-named folder
    with a user's .zattrs), the model's two files, a pairs CSV, a transform, and a FIFO."""
    import shutil

    from napari_comir.core.synthetic import synthetic_pair

    folder = tmp_path_factory.mktemp("read-inputs")
    (folder / "z.ome.zarr").mkdir()
    bf, shg = synthetic_pair((64, 64), seed=0)
    tifffile.imwrite(folder / "shg.tif", shg)
    tifffile.imwrite(folder / "z.ome.zarr" / "bf.tif", bf)
    (folder / "z.ome.zarr" / ".zattrs").write_text('{"multiscales": []}')
    for suffix in (".json", ".safetensors"):
        shutil.copy(model_file.replace(".json", suffix), folder / f"m{suffix}")
    (folder / "pairs.csv").write_text("name,shg_file,bf_file\np,shg.tif,z.ome.zarr/bf.tif\n")
    (folder / "t.json").write_text('{"matrix_xy": [[1, 0, 2], [0, 1, 3]]}')
    os.mkfifo(folder / "fifo")
    return folder


@settings(max_examples=EXAMPLES["outputs"], **FUZZ)
@given(command=st.sampled_from(sorted(_COMMAND_INPUTS)), data=st.data())
def test_no_output_lands_on_what_a_command_reads(read_inputs, capsys, command, data):
    """An output option drawn onto anything the command reads (an image, the model's card or
    weights, --from, the pairs CSV and what it lists, the transform, an OME-Zarr folder that
    holds an input) or onto a FIFO: refused in one line, every input byte-identical."""
    argv, inputs, options = _COMMAND_INPUTS[command]
    option = data.draw(st.sampled_from(options), "option")
    # train --out NAME writes NAME.json and NAME.safetensors: only the model's files are hit
    targets = ["m.json", "m.safetensors"] if (command, option) == ("train", "--out") else inputs + ["fifo"]
    target = data.draw(st.sampled_from(targets), "target")
    argv = [arg.format(**{"in": read_inputs}) for arg in argv]
    value = str(read_inputs / target)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    before = {str(p): _digest(p) for p in sorted(read_inputs.rglob("*")) if p.is_file()}
    status, err = _run(argv, capsys)
    _log("outputs onto inputs", status)
    assert status == 2, (argv, err)
    _assert_one_line(err, command)
    assert {str(p): _digest(p) for p in sorted(read_inputs.rglob("*")) if p.is_file()} == before
