"""Every bad input a user can give ends early, in one line that names the cause and the fix.

Each case is a command line run as a user runs it (a process of its own, :mod:`tests.cli_fork`,
all of them started from one warm interpreter): the exit status is non-zero, stderr ends with one
``lit-seg: error: ...`` line and holds no traceback, and a command that fails before training
leaves no run folder behind.
"""

import io
import subprocess

import pytest
import torch

from tests.cli_fork import run_many
from tests.conftest import EXPERIMENTS
from tests.fixtures import write_folder

CCNET = ["fit", "--config", str(EXPERIMENTS / "ccnet_r2.yaml")]
FOLDER_DATA = ["--data", "lit_seg.data.SegmentationDataModule", "--data.init_args.dataset", "folder",
               "--data.init_args.crop_size", "[64,64]", "--data.init_args.batch_size", "2",
               "--data.init_args.num_workers", "1", "--trainer.max_epochs", "1",
               "--trainer.enable_progress_bar", "false"]

# id: (arguments after `lit-seg fit --config experiments/ccnet_r2.yaml`, the message, exit status,
# fails before any run folder is made). "{root}" is a folder of prepared inputs (see `inputs`).
CASES = {
    "unknown-head": (["--model.head", "lit_seg.models.heads.NoSuchHead"],
                     "unknown or invalid head: choose one of ANNHead, ASPPHead, CCHead", 2, True),
    "unknown-encoder": (["--model.encoder_name", "resnet9000"],
                        "unknown encoder 'resnet9000': use an smp encoder name", 2, True),
    "encoder-without-os8": (["--model.encoder_name", "vgg11"],
                            "encoder 'vgg11' cannot run at output stride 8", 2, True),
    "misspelt-key": (["--model.encoder_nme", "resnet18"], "unrecognized arguments: --model.encoder_nme", 2, True),
    "misspelt-key-in-yaml": (["--config", "{root}/typo.yaml"], "does not accept option 'model.encoder_nam'", 2, True),
    "wrong-type": (["--model.aux_weight", "abc"], "Parser key \"model.aux_weight\": Expected a <class 'float'>",
                   2, True),
    "recurrence-below-1": (["--model.head.init_args.recurrence", "0"],
                           "CCHead: recurrence must be >= 1, got 0", 2, True),
    "negative-lr": (["--model.optimizer.init_args.lr", "-0.1"],
                    "optimizer: Invalid learning rate: -0.1 (model.optimizer.init_args)", 2, True),
    "batch-size-0": (["--data.init_args.batch_size", "0"], "batch_size must be >= 1, got 0", 2, True),
    "images-too-small": (["--data.init_args.task", "global", "--data.init_args.image_size", "[16,16]"],
                         "image_size (16, 16) is too small for objects of radius up to 12 px", 2, True),
    "eval-stride-larger-than-crop": (["--model.eval_mode", "slide", "--model.eval_crop", "[64,64]",
                                      "--model.eval_stride", "[96,96]"],
                                     "eval_stride (96, 96) must be positive and at most eval_crop (64, 64)", 2, True),
    "class-weights-vs-data-classes": (["--model.class_weights", "[1,2]"],
                                      "2 class weights for 4 classes: model.class_weights needs one weight per class",
                                      2, True),
    "model-classes-set-apart-from-the-data": (["--model.num_classes", "5"],
                                              'Linked "model.num_classes" must be given via "data.num_classes"', 2,
                                              True),
    "checkpoint-with-other-classes": (["--data.init_args.num_colors", "2", "--ckpt_path", "{root}/classes4.ckpt"],
                                      ("predicts 4 classes (background, object_red, object_green, object_blue) but "
                                       "the data set has 3"), 2, True),
    "checkpoint-of-another-module": (["--ckpt_path", "{root}/other.ckpt"],
                                     "is not one of lit-seg's SegmentationModule", 2, True),
    "checkpoint-of-another-model": (["--ckpt_path", "{root}/foreign.ckpt"],
                                    ("weights missing (e.g. model.encoder.conv1.weight); 1 weight this model lacks "
                                     "(e.g. net.0.weight)"), 2, True),
    "weights-file-as-checkpoint": (["--ckpt_path", "{root}/weights.pth"],
                                   "is not a Lightning checkpoint (no state_dict and loop state)", 2, True),
    "corrupt-checkpoint": (["--ckpt_path", "{root}/corrupt.ckpt"],
                           ("cannot be read (PytorchStreamReader failed reading zip archive: failed finding central "
                            "directory): the file is truncated or corrupt"), 2, True),
    "missing-checkpoint": (["--ckpt_path", "{root}/nope.ckpt"], "nope.ckpt not found", 2, True),
    "ckpt-path-last-in-a-new-run": (["--ckpt_path", "last"],
                                    "to continue an earlier run: lit-seg fit --resume runs/<experiment>/<run>",
                                    2, True),
    "resume-without-a-run-folder": (["--resume", "{root}/no_run"], "no_run: does not exist; pass a run folder",
                                    2, True),
    "missing-data-set-folder": ([*FOLDER_DATA, "--data.init_args.root", "{root}/nope"],
                                "folder data root {root}/nope does not exist or is not a folder; expected", 2, True),
    "malformed-data-set-folder": ([*FOLDER_DATA, "--data.init_args.root", "{root}/malformed"],
                                  "missing folder {root}/malformed/masks: expected", 2, True),
    # Found while the first batches are read: the run folder made for the run is removed again.
    "unreadable-image": ([*FOLDER_DATA, "--data.init_args.root", "{root}/bad_image"],
                         "cannot read image {root}/bad_image/images/", 2, True),
    "mask-values-outside-the-classes": ([*FOLDER_DATA, "--data.init_args.root", "{root}/bad_mask"],
                                        "holds values [9] that are no class of the folder data set", 2, True),
    "classes-txt-with-a-repeated-name": ([*FOLDER_DATA, "--data.init_args.root", "{root}/repeated_class"],
                                         "class list {root}/repeated_class/classes.txt line 3 repeats the name 'sky' "
                                         "of line 1", 2, True),
    "classes-txt-with-a-blank-line": ([*FOLDER_DATA, "--data.init_args.root", "{root}/blank_class"],
                                      "class list {root}/blank_class/classes.txt line 2 is blank", 2, True),
    "fewer-training-images-than-batch-size": ([*FOLDER_DATA, "--data.init_args.root", "{root}/two_images",
                                               "--data.init_args.batch_size", "3"],
                                              "has 2 images, fewer than batch_size 3: not one full training batch",
                                              2, True),
    "empty-base": (["--config", "{root}/empty_base.yaml"], "config file {root}/empty_base.yaml: _base_ must name a "
                   "file or a list of files", 2, True),
    "base-cycle-through-dotdot": (["--config", "{root}/cycle/a.yaml"],
                                  "config {root}/cycle/../cycle/a.yaml includes itself through _base_", 2, True),
    "config-that-is-a-list": (["--config", "{root}/list.yaml"],
                              "config file {root}/list.yaml holds a YAML list, not a mapping of settings", 2, True),
    "encoder-depth-out-of-range": (["--model.encoder_depth", "9"], "encoder_depth must be 1 to 5", 2, True),
    "val-check-interval-longer-than-the-epoch": (["--trainer.val_check_interval", "10",
                                                  "--trainer.limit_train_batches", "2"],
                                                 "trainer.val_check_interval 10 is more batches than an epoch has "
                                                 "(2 training batches)", 2, True),
    "num-classes-given-to-the-head": (["--model.head.init_args.num_classes", "7"],
                                      "the class count comes from the data set", 2, True),
    "hub-weights-offline": (["--model.encoder_weights", "imagenet"],
                            "--model.encoder_weights /path/to/resnet18.safetensors", 2, True),
    "output-folder-not-writable": ([], "cannot write the run folder runs/ccnet_r2/", 2, True),
    "wandb-online-without-key": ([], "WANDB_MODE=online needs a W&B API key", 2, True),
    "wandb-online-without-network": ([], "W&B server 127.0.0.1:9 cannot be reached from here", 2, True),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Bad files and folders the cases point at."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "typo.yaml").write_text("model:\n  encoder_nam: resnet18\n")
    write_folder(root / "bad_image", size=(64, 64))
    (root / "bad_image" / "images" / "train" / "a.png").write_bytes(b"not a png")
    write_folder(root / "bad_mask", values=(0, 1, 9), size=(64, 64))
    write_folder(root / "repeated_class", class_names=("sky", "road", "sky"), size=(64, 64))
    write_folder(root / "blank_class", class_names=("sky", "", "road"), size=(64, 64))
    write_folder(root / "two_images", size=(64, 64))
    (root / "empty_base.yaml").write_text("_base_:\nmodel:\n  aux_weight: 0.0\n")
    (root / "cycle").mkdir()
    (root / "cycle" / "a.yaml").write_text("_base_: ../cycle/a.yaml\n")
    (root / "list.yaml").write_text("- model\n- data\n")
    (root / "malformed" / "images").mkdir(parents=True)
    hparams = {"head": {"class_path": "lit_seg.models.heads.CCHead", "init_args": {"channels": 64, "recurrence": 2}},
               "encoder_name": "resnet18", "encoder_depth": 3, "aux_weight": 0.0, "num_classes": 4,
               "class_names": ["background", "object_red", "object_green", "object_blue"]}
    lightning = {"pytorch-lightning_version": "2.6.0", "state_dict": {"net.0.weight": torch.zeros(4, 3)}}
    torch.save({**lightning, "hyper_parameters": hparams}, root / "classes4.ckpt")
    torch.save({**lightning, "hyper_parameters": {"_class_path": "my.OtherModule", "hidden": 32}}, root / "other.ckpt")
    torch.save(lightning, root / "foreign.ckpt")
    torch.save({"conv1.weight": torch.zeros(4, 3)}, root / "weights.pth")
    whole = io.BytesIO()
    torch.save({**lightning, "state_dict": {"w": torch.zeros(10_000)}}, whole)
    (root / "corrupt.ckpt").write_bytes(whole.getvalue()[:2000])  # cut off, as by a full disk or a kill
    return root


@pytest.fixture(scope="module")
def results(inputs, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    offline = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "0"}
    envs = {
        "wandb-online-without-key": {"WANDB_MODE": "online", "WANDB_API_KEY": "", "HOME": str(inputs)},
        "wandb-online-without-network": {"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40,
                                         "WANDB_BASE_URL": "http://127.0.0.1:9"},  # nothing listens there
        # Fails after W&B has made its offline run in the run folder: all of it goes.
        "val-check-interval-longer-than-the-epoch": {"WANDB_MODE": "offline"},
    }
    commands = []
    for case, (args, *_) in CASES.items():
        cwd = tmp_path_factory.mktemp(case)
        if case == "output-folder-not-writable":
            (cwd / "runs").write_text("a file where the runs folder goes")  # even root cannot write there
        # Two at a time, one thread each: independent commands (own folders), mostly parsing.
        commands.append(([*CCNET, *(a.replace("{root}", str(inputs)) for a in args)], cwd,
                         {**envs.get(case, offline), "OMP_NUM_THREADS": "1"}))
    done = run_many(commands, timeout=60, jobs=2)
    return {case: (result, cwd) for case, result, (_, cwd, _) in zip(CASES, done, commands)}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(results, inputs, case):
    _, message, status, early = CASES[case]
    done, cwd = results[case]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert done.returncode == status, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("lit-seg: error: "), lines[-5:]
    assert message.replace("{root}", str(inputs)) in errors[0]
    if early:  # nothing left behind (the non-writable case has its `runs` file, nothing else)
        leftovers = [p for p in cwd.rglob("*") if p != cwd / "runs"]
        assert not leftovers, leftovers

