// A form for a JSON Schema of parameters (a template's, a deployment's inputs): one field per
// property, in the schema's order, the usual ones first and the rest under "More".

import { h } from "./dom.js";

const FIRST = ["prompt", "negative_prompt", "width", "height", "steps", "seed", "batch_size", "loras"];
const LONG_TEXT = new Set(["prompt", "negative_prompt"]);

function resolve(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return (root.$defs || {})[name] || {};
  }
  return schema || {};
}

// The property's own schema without "null", and whether null (leaving it out) is allowed.
function base(schema, root) {
  const resolved = resolve(schema, root);
  if (Array.isArray(resolved.anyOf)) {
    const options = resolved.anyOf.map((option) => resolve(option, root));
    const kept = options.filter((option) => option.type !== "null");
    return { ...resolved, ...(kept[0] || {}), nullable: kept.length < options.length };
  }
  return resolved;
}

function label(name, schema) {
  const title = name.replaceAll("_", " ");
  return h("label", { for: "param-" + name, title: schema.description || null }, title);
}

function field(name, schema, root) {
  const spec = base(schema, root);
  const common = { id: "param-" + name, name, "aria-describedby": spec.description ? "help-" + name : null };
  let control;
  if (spec.type === "array") {
    control = loraList(name, resolve(spec.items, root));
  } else if (Array.isArray(spec.enum)) {
    control = h("select", common, spec.enum.map((option) => h("option", { value: String(option), selected: option === spec.default }, String(option))));
  } else if (spec.type === "integer" || spec.type === "number") {
    control = h("input", {
      ...common,
      type: "number",
      inputmode: spec.type === "integer" ? "numeric" : "decimal",
      min: spec.minimum ?? spec.exclusiveMinimum,
      max: spec.maximum ?? spec.exclusiveMaximum,
      step: spec.multipleOf ?? (spec.type === "integer" ? 1 : "any"),
      value: spec.default ?? "",
      placeholder: spec.nullable && spec.default == null ? "random" : null,
    });
  } else if (spec.type === "boolean") {
    control = h("input", { ...common, type: "checkbox", checked: spec.default === true });
  } else if (LONG_TEXT.has(name)) {
    control = h("textarea", { ...common, rows: name === "prompt" ? 4 : 2 }, spec.default ?? "");
  } else {
    control = h("input", { ...common, type: "text", value: spec.default ?? "", spellcheck: "false" });
  }
  control.dataset.kind = spec.type === "array" ? "list" : spec.type || "string";
  control.dataset.nullable = String(Boolean(spec.nullable) || spec.default !== undefined);
  const help = spec.description ? h("small", { id: "help-" + name, class: "muted" }, spec.description) : null;
  return h("div", { class: "field field-" + (spec.type || "string") }, label(name, spec), control, help);
}

// LoRAs (or any list of {url, strength}): rows added and removed by hand.
function loraList(name, item) {
  const rows = h("div", { class: "rows" });
  const add = () => {
    const strength = (item.properties || {}).strength || {};
    const row = h(
      "div",
      { class: "row" },
      h("input", { type: "text", name: name + ".url", placeholder: "https://… (a .safetensors file)", "aria-label": "LoRA URL", spellcheck: "false" }),
      h("input", { type: "number", name: name + ".strength", step: "0.05", value: strength.default ?? 1, min: strength.minimum, max: strength.maximum, "aria-label": "strength" }),
      h("button", { type: "button", class: "quiet", "aria-label": "Remove this LoRA", onclick: () => row.remove() }, "Remove"),
    );
    rows.append(row);
    row.querySelector("input").focus();
  };
  return h("div", { class: "list", name, id: "param-" + name }, rows, h("button", { type: "button", class: "quiet", dataset: { action: "add-lora" }, onclick: add }, "Add LoRA"));
}

export function schemaForm(schema) {
  const properties = schema.properties || {};
  const names = Object.keys(properties);
  const first = names.filter((name) => FIRST.includes(name) || (schema.required || []).includes(name));
  const rest = names.filter((name) => !first.includes(name));
  const fields = (list) => list.map((name) => field(name, properties[name], schema));
  return h(
    "div",
    { class: "params" },
    h("div", { class: "grid" }, fields(first)),
    rest.length ? h("details", {}, h("summary", {}, "More parameters"), h("div", { class: "grid" }, fields(rest))) : null,
  );
}

// The values a schema form holds, as the API takes them: empty optional fields left out.
export function formValues(container) {
  const values = {};
  for (const control of container.querySelectorAll("[data-kind]")) {
    const name = control.getAttribute("name");
    const kind = control.dataset.kind;
    const optional = control.dataset.nullable === "true";
    if (kind === "list") {
      const items = [...control.querySelectorAll(".row")]
        .map((row) => ({ url: row.querySelector("[name$='.url']").value.trim(), strength: Number(row.querySelector("[name$='.strength']").value) }))
        .filter((entry) => entry.url);
      if (items.length) values[name] = items;
    } else if (kind === "boolean") {
      values[name] = control.checked;
    } else if (kind === "integer" || kind === "number") {
      if (control.value === "" && optional) continue;
      values[name] = control.value === "" ? null : Number(control.value);
    } else {
      if (control.value === "" && optional) continue;
      values[name] = control.value;
    }
  }
  return values;
}
