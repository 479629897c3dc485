"""The command line's flags come from the option dataclasses: one flag, one default and one help text per
field, the same meaning wherever it appears, and a clear refusal of a value it cannot take."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from lineguard.cli.fit import spelling_hint
from lineguard.cli.flags import add_options, build
from lineguard.cli.main import build_parser, main
from lineguard.training.kinds import ADAPTERS, EvaluateRequest
from lineguard.training.options import ClassifierFitOptions, FitOptions, SensorFitOptions


def parse(cls: type, argv: list[str], defaults: dict[str, object] | None = None) -> object:
    parser = argparse.ArgumentParser()
    add_options(parser, cls, defaults)
    return build(cls, parser.parse_args(argv), defaults)


def test_every_option_has_one_help_text() -> None:
    for cls in [*(a.options for a in ADAPTERS.values()), EvaluateRequest]:
        for field in dataclasses.fields(cls):
            assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help"


def test_flags_parse_into_the_options_and_absent_ones_keep_their_defaults() -> None:
    image = parse(
        FitOptions,
        ["--layers", "blocks.1,blocks.3", "--head-param", "bank_size=512", "--head-param", "metric=cosine",
         "--no-eval", "--threshold-from-test", "miss_rate", "--target", "0.05", "--aggregation", "max"],
    )  # fmt: skip
    assert image == FitOptions(
        layers=("blocks.1", "blocks.3"), head_params={"bank_size": 512, "metric": "cosine"}, evaluate=False,
        threshold_objective="miss_rate", threshold_target=0.05, aggregation="max",
    )  # fmt: skip
    sensor = parse(SensorFitOptions, ["--hidden", "24,12", "--epochs", "40", "--workers", "0"])
    assert isinstance(sensor, SensorFitOptions) and sensor.hidden == [24, 12]
    assert sensor.train.epochs == 40 and sensor.train.workers == 0 and sensor.train.patience == 15
    classifier = parse(
        ClassifierFitOptions,
        ["--merge", "defective=crack,dent", "--merge", "defective=spot", "--severity", "high=0.95,low=0.7",
         "--epochs", "10"],
    )  # fmt: skip
    assert isinstance(classifier, ClassifierFitOptions)
    assert classifier.merge == {"defective": ["crack", "dent", "spot"]}
    assert classifier.severity == {"high": 0.95, "low": 0.7} and classifier.train.epochs == 10
    assert classifier.train.patience == 20  # the classifier's own training default, not the sensor's


def test_the_environment_moves_a_default_but_a_flag_wins() -> None:
    assert parse(FitOptions, [], {"device": "cpu"}) == FitOptions(device="cpu")
    assert parse(FitOptions, ["--device", "auto"], {"device": "cpu"}) == FitOptions()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "classifier", "--line", "a", "--data", ".", "--hidden", "128,64"], "expected a whole number"),
        (["fit", "image", "--line", "a", "--data", ".", "--aggregation", "median"], "invalid choice: 'median'"),
        (["fit", "image", "--line", "a", "--data", ".", "--head-param", "bank_size"], "expected KEY=VALUE"),
        (["fit", "classifier", "--line", "a", "--data", ".", "--severity", "high"], "LEVEL=NUMBER"),
        (["fit", "sensor", "--line", "a", "--data", ".", "--kind", "sensor"], "unrecognized arguments: --kind"),
        (["fit", "--line", "a", "--data", "."], "say what to fit first: lineguard fit image|sensor|classifier"),
        (["fit", "--kind", "sensor", "--line", "a", "--data", "."], "(here: lineguard fit sensor ...)"),
        (["fit", "imag", "--line", "a", "--data", "."], "invalid choice: 'imag'"),
    ],
)
def test_values_a_flag_cannot_take_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_old_spelling_of_fit_is_answered_with_the_new_one() -> None:
    assert spelling_hint(["--store", "s", "-v", "fit", "--line", "a"]) is not None
    assert spelling_hint(["predict", "--line", "fit", "--values", "1"]) is None  # a line named "fit"
    assert spelling_hint(["fit", "sensor", "--line", "a"]) is None and spelling_hint(["fit", "--help"]) is None


def test_each_kind_is_a_sub_command_with_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(kind in out for kind in ("image", "sensor", "classifier"))
    assert main(["fit", "sensor", "--help"]) == 0
    sensor = capsys.readouterr().out
    assert "--hidden A,B,..." in sensor and "--threshold-from-test" not in sensor and "--head-param" not in sensor
    assert "--head {autoencoder,window-autoencoder,pca,auto}" in sensor and "--alarm-k" in sensor
    assert main(["fit", "classifier", "--help"]) == 0
    classifier = capsys.readouterr().out
    assert "--hidden N" in classifier and "(default: 256)" in classifier and "--feature-workers" in classifier
    assert build_parser().prog == "lineguard"
