// The playground: a template's (or one of your deployments') parameters, or a whole
// API-format workflow pasted or dropped as a .json file; a 202 opens the job.

import { call, get } from "./api.js";
import { clear, h, loading } from "./dom.js";
import { formValues, schemaForm } from "./forms.js";
import { problemBox } from "./problems.js";

const TEMPLATES = ["sd15", "sdxl", "flux"];
const WORKFLOW = "workflow";

function workflowEditor() {
  const area = h("textarea", {
    name: "workflow",
    id: "workflow",
    rows: 16,
    spellcheck: "false",
    placeholder: '{"3": {"class_type": "KSampler", "inputs": {…}}, …}  (Workflow → Export (API))',
  });
  const read = (file) => file && file.text().then((text) => (area.value = text));
  area.addEventListener("dragover", (event) => {
    event.preventDefault();
    area.classList.add("dropping");
  });
  area.addEventListener("dragleave", () => area.classList.remove("dropping"));
  area.addEventListener("drop", (event) => {
    event.preventDefault();
    area.classList.remove("dropping");
    read(event.dataTransfer.files[0]);
  });
  const file = h("input", { type: "file", accept: ".json,application/json", id: "workflow-file", onchange: () => read(file.files[0]) });
  return h(
    "div",
    { class: "field" },
    h("label", { for: "workflow" }, "Workflow (API format)"),
    area,
    h("small", { class: "muted" }, "Paste it, drop a .json file here, or ", h("label", { for: "workflow-file", class: "link" }, "open one"), "."),
    file,
  );
}

// The body and path of a submit; a workflow that is not JSON is refused here.
function request(choice, form) {
  if (choice === WORKFLOW) {
    const text = form.querySelector("[name=workflow]").value;
    let document;
    try {
      document = JSON.parse(text);
    } catch (error) {
      throw Object.assign(new Error("The workflow is not JSON: " + error.message), { code: "malformed_json" });
    }
    const whole = document && typeof document === "object" && !Array.isArray(document) && "prompt" in document;
    return ["/v1/jobs", whole ? document : { prompt: document }];
  }
  const values = formValues(form.querySelector(".params"));
  if (choice.startsWith("deployment:")) {
    return ["/v1/deployments/" + encodeURIComponent(choice.slice(11)) + "/jobs", { inputs: values }];
  }
  return ["/v1/workflows/" + choice, values];
}

export async function renderPlayground(view, { life }) {
  view.append(h("h1", {}, "Playground"), loading("Loading the templates"));
  let templates;
  let deployments = [];
  try {
    [templates, deployments] = await Promise.all([
      get("/v1/workflows"),
      get("/v1/deployments", { limit: 100 }).then((page) => page.deployments.filter((d) => !d.builtin), () => []),
    ]);
  } catch (error) {
    if (!life.alive) return;
    clear(view).append(h("h1", {}, "Playground"), problemBox(error));
    return;
  }
  if (!life.alive) return;
  const schemas = Object.fromEntries(templates.workflows.map((t) => [t.name, t]));
  const select = h(
    "select",
    { name: "template", id: "template" },
    TEMPLATES.filter((name) => schemas[name]).map((name) => h("option", { value: name }, name + " — " + schemas[name].description)),
    h("option", { value: WORKFLOW }, "workflow — paste an API-format graph"),
    deployments.length ? h("optgroup", { label: "Your deployments" }, deployments.map((d) => h("option", { value: "deployment:" + d.name }, d.name + " (v" + d.version + ")"))) : null,
  );
  const body = h("div", { class: "choice" });
  const result = h("div", { class: "result", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", dataset: { action: "submit" } }, "Submit");
  const form = h("form", { class: "panel playground", method: "post" }, h("div", { class: "field" }, h("label", { for: "template" }, "Template"), select), body, h("div", { class: "actions" }, submit), result);

  async function show() {
    clear(body);
    clear(result);
    const choice = select.value;
    if (choice === WORKFLOW) body.append(workflowEditor());
    else if (choice.startsWith("deployment:")) {
      body.append(loading());
      try {
        const deployment = await get("/v1/deployments/" + encodeURIComponent(choice.slice(11)));
        clear(body).append(schemaForm(deployment.input_schema));
      } catch (error) {
        clear(body).append(problemBox(error));
      }
    } else body.append(schemaForm(schemas[choice].parameters));
  }
  select.addEventListener("change", show);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(result);
    submit.disabled = true;
    try {
      const [path, payload] = request(select.value, form);
      const accepted = await call("POST", path, { body: payload });
      location.hash = "#/jobs/" + accepted.job_id;
    } catch (error) {
      result.append(problemBox(error));
      submit.disabled = false;
    }
  });
  clear(view).append(h("h1", {}, "Playground"), form);
  await show();
}
