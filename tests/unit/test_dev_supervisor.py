"""The dev stack starts dead agents and fakecomfy servers again, as systemd's Restart=always:
after a delay that doubles with each quick death, back to the first once a child stayed up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from comfyfleet.dev.agents import (
    FIRST_DELAY_SECONDS,
    MAX_DELAY_SECONDS,
    STABLE_SECONDS,
    AgentProcess,
    Supervisor,
)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeChild:
    name: str
    clock: Clock
    pid: int = 100
    running: bool = True
    started_at: float = field(default=0.0)
    log_path: Path = Path("/dev/null")
    popen: Any = field(default_factory=lambda: SimpleNamespace(returncode=-9))

    def alive(self) -> bool:
        return self.running

    def respawn(self) -> FakeChild:
        return FakeChild(self.name, self.clock, self.pid + 1, started_at=self.clock())


def agent(clock: Clock) -> AgentProcess:
    comfy = FakeChild("fakecomfy-1", clock, 200, started_at=clock())
    process = FakeChild("dev-node-1", clock, 100, started_at=clock())
    return AgentProcess("dev-node-1", "http://x", Path("/r"), Path("/c"), process, comfy)  # type: ignore[arg-type]


def test_a_dead_agent_starts_again_after_the_first_delay() -> None:
    clock = Clock()
    node = agent(clock)
    supervisor = Supervisor([node], clock=clock)
    clock.now += 120
    node.process.running = False  # type: ignore[attr-defined]

    assert supervisor.check() == []  # seen dead: scheduled, not yet started
    clock.now += FIRST_DELAY_SECONDS
    assert supervisor.check() == ["dev-node-1"]
    assert node.process.pid == 101 and node.restarts == 1
    assert node.comfy is not None and node.comfy.pid == 200  # its fakecomfy untouched


def test_quick_deaths_double_the_delay_up_to_the_cap() -> None:
    clock = Clock()
    node = agent(clock)
    supervisor = Supervisor([node], clock=clock)
    delays = []
    for _ in range(8):
        node.process.running = False  # type: ignore[attr-defined]  # dies at once
        supervisor.check()
        waited = 0.0
        while not supervisor.check():
            clock.now += 0.5
            waited += 0.5
        delays.append(waited)
    assert delays[:3] == [FIRST_DELAY_SECONDS, 2 * FIRST_DELAY_SECONDS, 4 * FIRST_DELAY_SECONDS]
    assert max(delays) == MAX_DELAY_SECONDS


def test_a_child_that_stayed_up_starts_from_the_first_delay_again() -> None:
    clock = Clock()
    node = agent(clock)
    supervisor = Supervisor([node], clock=clock)
    for _ in range(3):  # three quick deaths: 1, 2, 4 s
        node.process.running = False  # type: ignore[attr-defined]
        supervisor.check()
        clock.now += MAX_DELAY_SECONDS
        supervisor.check()
    clock.now += STABLE_SECONDS
    node.process.running = False  # type: ignore[attr-defined]
    supervisor.check()
    clock.now += FIRST_DELAY_SECONDS
    assert supervisor.check() == ["dev-node-1"]


def test_comfyui_and_its_agent_come_back_each_on_its_own() -> None:
    clock = Clock()
    node = agent(clock)
    supervisor = Supervisor([node], clock=clock)
    node.comfy.running = False  # type: ignore[union-attr]
    node.process.running = False  # type: ignore[attr-defined]
    supervisor.check()
    clock.now += FIRST_DELAY_SECONDS
    assert supervisor.check() == ["fakecomfy-1", "dev-node-1"]  # ComfyUI first, as the units
    assert node.describe()["restarts"] == 2
