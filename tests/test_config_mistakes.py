"""Mistakes caught when the config is read: an unknown model name of ours, a config file that is binary
or a folder. Each is one line on stderr (``swat-dist CMD: error: ...``), exit 2, no traceback."""

from __future__ import annotations

import pytest

from swat_dist.cli import main
from swat_dist.config import ConfigError, check_model_name, load_config, zoo_names

SYNTHETIC = "data.format=synthetic"


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["config", SYNTHETIC],
        ["submit", "-c", "configs/demo_digits.yaml", "--cluster", "local-test", "--dry-run"],
    ],
)
def test_an_unregistered_swat_name_is_one_line_with_the_closest_names(capsys, argv):
    err = _one_line_error(capsys, [*argv, "model.name=swat_deit_micro_patch4_23"])
    assert err.startswith(f"swat-dist {argv[0]}: error: model.name: unknown model 'swat_deit_micro_patch4_23'")
    assert "did you mean swat_deit_micro_patch4_32" in err


def test_names_that_look_like_ours_are_checked_and_timm_names_are_left_to_the_build():
    with pytest.raises(ConfigError, match="did you mean deit_micro_patch4_32"):
        check_model_name("deit_micro_patch4_23")  # a micro baseline's typo: ours by convention
    with pytest.raises(ConfigError, match="see `swat-dist models`"):
        check_model_name("swat_nothing_like_it")
    for name in ("swat_swin_micro_patch4_window4_32", "mixer_micro_patch4_32", "resnet18", "not_a_timm_name"):
        check_model_name(name)  # ours, or timm's to know (checked in train/eval, see below)
    assert load_config([], [SYNTHETIC, "model.name=resnet18"]).model.name == "resnet18"


def test_the_zoo_names_read_without_timm_are_the_zoo():
    from swat_dist.models.zoo import ZOO

    assert zoo_names() == {e.name for e in ZOO} | {e.baseline for e in ZOO}


def test_train_refuses_a_name_timm_does_not_know_in_one_line_before_building(tmp_path):
    from swat_dist.train.finetune import build_model

    cfg = load_config([], [SYNTHETIC, "model.name=deit_tiny_patch16_244", f"output_dir={tmp_path}/run"])
    with pytest.raises(ValueError, match=r"^unknown model 'deit_tiny_patch16_244'; did you mean deit_tiny_patch16_224"):
        build_model(cfg)


def test_a_binary_config_file_says_so_and_names_it(capsys, tmp_path):
    png = tmp_path / "photo.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    err = _one_line_error(capsys, ["config", "-c", str(png)])
    assert err == f"swat-dist config: error: {png}: not a YAML text file (binary data at byte 0)"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")  # not UTF-8, no NUL byte
    assert f"{latin}: not a YAML text file (binary data at byte 9)" in _one_line_error(
        capsys, ["config", "-c", str(latin)]
    )


def test_a_folder_given_as_config_says_it_is_a_folder(capsys, tmp_path):
    err = _one_line_error(capsys, ["train", "-c", str(tmp_path)])
    folder = repr(str(tmp_path))
    assert err == f"swat-dist train: error: config: {folder} is a folder, not a config file (a .yaml file is expected)"


def test_a_binary_cluster_profile_says_so_and_names_it(capsys, tmp_path):
    profile = tmp_path / "cluster.yaml"
    profile.write_bytes(bytes(range(256)))
    argv = ["submit", "-c", "configs/demo_digits.yaml", "--cluster", str(profile), "--dry-run"]
    assert (
        _one_line_error(capsys, argv)
        == f"swat-dist submit: error: {profile}: not a YAML text file (binary data at byte 0)"
    )
    profile.write_text("partition: [debug\n")
    assert f"{profile}: not valid YAML" in _one_line_error(capsys, argv)
