"""The function factory on its own: a folder that is not there yet is left out, loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import App, Duration, Environment, Stack

from comfyfleet_cdk import functions
from comfyfleet_cdk.config import read_config
from tests.infra.conftest import SKIP_BUNDLING


def test_a_missing_function_folder_is_left_out_with_a_synth_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a functions/ folder without reaper/
    monkeypatch.setattr(functions, "FUNCTIONS_DIR", tmp_path)
    config = read_config({})
    stack = Stack(
        App(context=SKIP_BUNDLING),
        "Factory",
        env=Environment(account=config.account, region=config.region),
    )
    factory = functions.FunctionFactory(stack, "Factory", config=config, environment={})

    # when the factory is asked for it
    built = factory.build(
        "reaper", description="reaper", memory_mb=128, timeout=Duration.seconds(3)
    )

    # then nothing is built and the synth warns, naming the folder
    assert built is None
    warnings = [str(e.data) for e in factory.node.metadata if e.type == "aws:cdk:warning"]
    assert any("functions/reaper/app.py does not exist" in w for w in warnings), warnings
