"""The built-in templates as read-only deployments owned by nobody: listed, described and
run through the same routes as an account's own (``POST /v1/workflows/{name}`` too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyfleet.templates import TEMPLATES, RenderedTemplate, Template, render_template

BUILTIN_VERSION = 1


@dataclass(frozen=True, slots=True)
class BuiltinDeployment:
    template: Template

    @property
    def name(self) -> str:
        return self.template.name

    @property
    def description(self) -> str:
        return self.template.description

    @property
    def version(self) -> int:
        return BUILTIN_VERSION

    def input_schema(self) -> dict[str, Any]:
        return self.template.schema()

    def render(self, values: Mapping[str, Any] | Any) -> RenderedTemplate:
        """The template's graph (InvalidTemplateParams names each parameter that is wrong)."""
        return render_template(self.name, values)


BUILTINS: dict[str, BuiltinDeployment] = {
    name: BuiltinDeployment(template) for name, template in TEMPLATES.items()
}
