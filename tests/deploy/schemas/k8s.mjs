// Checks rendered Kubernetes manifests (`kubectl kustomize` output) without a
// cluster:
//  1. every object against the Kubernetes OpenAPI schemas, twice over:
//     kubernetes-models' validators (types, required fields, formats, enums)
//     and the field lists of @kubernetes/client-node's generated models
//     (unknown or misspelt fields, which the first accepts);
//  2. the project's deployment rules (docs/deploy.md): pods run as non-root
//     with no privilege escalation, every capability dropped and a read-only
//     root filesystem; every container has requests, limits and an exec
//     health probe; image tags are pinned (never `latest`); the coordinator
//     is a StatefulSet of one with its ledger on a PVC; trainers sit behind
//     a headless Service; GPUs are requested and tolerated in the gpu
//     overlay and nowhere else; NetworkPolicies deny ingress by default and
//     let only trainers (and, where it must, the coordinator) in.
//
//   node k8s.mjs cpu|gpu FILE.yaml   # an overlay's rendering: schemas and rules
//   node k8s.mjs schema FILE.yaml    # any objects (e.g. the Secret): schemas only
// Prints one line per finding and exits 1 when there is any.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as clientModels from "@kubernetes/client-node";

const [overlay, file] = process.argv.slice(2);
if (!["cpu", "gpu", "schema"].includes(overlay) || !file) {
  console.error("usage: node k8s.mjs cpu|gpu|schema FILE.yaml");
  process.exit(2);
}
const findings = [];
const fail = (where, what) => findings.push(`${where}: ${what}`);

const docs = parseAllDocuments(readFileSync(file, "utf8"));
const objects = [];
for (const doc of docs) {
  if (doc.errors.length) fail(file, `YAML: ${doc.errors[0].message}`);
  const o = doc.toJS();
  if (o) objects.push(o);
}
const nameOf = (o) => `${o.kind}/${o.metadata?.name}`;

// --- 1. schemas -------------------------------------------------------------
function checkKnownFields(value, type, path, where) {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return fail(where, `${path} must be a list`);
    value.forEach((v, i) => checkKnownFields(v, array[1], `${path}[${i}]`, where));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    for (const [k, v] of Object.entries(value)) checkKnownFields(v, map[1], `${path}.${k}`, where);
    return;
  }
  const model = clientModels[type];
  if (!model || typeof model.getAttributeTypeMap !== "function") return;  // a scalar
  if (typeof value !== "object" || Array.isArray(value)) return fail(where, `${path} must be an object`);
  const fields = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) fail(where, `${path}.${k} is not a field of ${type}`);
    else checkKnownFields(v, fields.get(k), `${path}.${k}`, where);
  }
}

for (const o of objects) {
  const where = nameOf(o);
  if (typeof o.apiVersion !== "string" || typeof o.kind !== "string") {
    fail(where, "no apiVersion or kind");
    continue;
  }
  let model;
  try {
    model = (await import(`kubernetes-models/${o.apiVersion}`))[o.kind];
  } catch {
    model = undefined;
  }
  if (!model) {
    fail(where, `unknown kind ${o.apiVersion} ${o.kind}`);
    continue;
  }
  try {
    new model(o).validate();
  } catch (e) {
    fail(where, `schema: ${e.message}`);
  }
  const version = o.apiVersion.split("/").pop();
  checkKnownFields(o, `${version[0].toUpperCase()}${version.slice(1)}${o.kind}`, "", where);
}

if (overlay === "schema") {
  for (const f of findings) console.log(f);
  console.log(`${file}: ${objects.length} objects, ${findings.length} findings`);
  process.exit(findings.length ? 1 : 0);
}

// --- 2. the project's rules -------------------------------------------------
const byKind = (kind) => objects.filter((o) => o.kind === kind);
const workloads = objects.filter((o) => ["Deployment", "StatefulSet", "Job", "DaemonSet"].includes(o.kind));
const appOf = (w) => w.spec?.template?.metadata?.labels?.["app.kubernetes.io/name"];

for (const w of workloads) {
  const where = nameOf(w);
  const pod = w.spec.template.spec;
  const psc = pod.securityContext ?? {};
  if (psc.runAsNonRoot !== true) fail(where, "pod securityContext.runAsNonRoot is not true");
  if (!(psc.runAsUser > 0)) fail(where, "pod securityContext.runAsUser is not a non-root uid");
  if (!(psc.fsGroup > 0)) fail(where, "pod securityContext.fsGroup is not set (secrets unreadable)");
  if (psc.seccompProfile?.type !== "RuntimeDefault") fail(where, "seccompProfile is not RuntimeDefault");
  if (pod.automountServiceAccountToken !== false) fail(where, "mounts a service account token it never uses");
  for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
    const cw = `${where} container ${c.name}`;
    const sc = c.securityContext ?? {};
    if (sc.allowPrivilegeEscalation !== false) fail(cw, "allowPrivilegeEscalation is not false");
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) fail(cw, "does not drop ALL capabilities");
    if (sc.readOnlyRootFilesystem !== true) fail(cw, "root filesystem is not read-only");
    if (sc.privileged) fail(cw, "is privileged");
    for (const part of ["requests", "limits"]) {
      for (const r of ["cpu", "memory"]) {
        if (!c.resources?.[part]?.[r]) fail(cw, `no resources.${part}.${r}`);
      }
    }
    const tag = /^[^@]+:([^:/@]+)$/.exec(c.image ?? "");
    if (!tag && !(c.image ?? "").includes("@sha256:")) fail(cw, `image ${c.image} has no tag`);
    if (tag && tag[1] === "latest") fail(cw, `image ${c.image} is tagged latest`);
    const probes = ["startupProbe", "readinessProbe", "livenessProbe"].filter((p) => c[p]);
    if (probes.length === 0) fail(cw, "has no health probe");
    for (const p of probes) {
      const cmd = c[p].exec?.command?.[0];
      if (cmd !== "dd-healthcheck" && cmd !== "rpc_probe") fail(cw, `${p} does not ask gRPC health`);
    }
    // A port named http is the process's /metrics (and status page): it
    // must listen there, behind the viewer token.
    const http = (c.ports ?? []).find((p) => p.name === "http");
    const args = c.args ?? [];
    if (http && !(args.includes(`--http_port=${http.containerPort}`) &&
                  args.some((a) => a.startsWith("--http_viewer_token_file=")))) {
      fail(cw, `exposes port http (${http.containerPort}) but does not serve it behind the viewer token`);
    }
    if (args.includes("--image_log_steps=0") === false && args.some((a) => a.startsWith("--image_log_steps=")) &&
        appOf(w) === "trainer" && !args.some((a) => a.startsWith("--sample_prompts="))) {
      fail(cw, "--image_log_steps without --sample_prompts (a peer refuses to start)");
    }
    const gpus = Number(c.resources?.limits?.["nvidia.com/gpu"] ?? 0);
    const isTrainer = appOf(w) === "trainer";
    if (overlay === "gpu" && isTrainer && !(gpus >= 1)) fail(cw, "gpu overlay: no nvidia.com/gpu limit");
    if ((overlay === "cpu" || !isTrainer) && gpus > 0) fail(cw, "asks for a GPU it cannot use");
    if (overlay === "gpu" && isTrainer) {
      const tolerated = (pod.tolerations ?? []).some((t) => t.key === "nvidia.com/gpu");
      if (!tolerated) fail(where, "gpu overlay: no toleration for nvidia.com/gpu");
      if (!c.image.endsWith("-cuda")) fail(cw, "gpu overlay: not the CUDA trainer image");
    }
  }
}

const coordinator = workloads.find((w) => appOf(w) === "coordinator");
if (!coordinator || coordinator.kind !== "StatefulSet") fail("coordinator", "is not a StatefulSet");
else {
  if (coordinator.spec.replicas !== 1) fail(nameOf(coordinator), "must have exactly one replica (one ledger writer)");
  const claims = (coordinator.spec.volumeClaimTemplates ?? []).map((v) => v.metadata.name);
  const mounts = coordinator.spec.template.spec.containers[0].volumeMounts ?? [];
  const ledger = mounts.find((m) => m.mountPath === "/var/lib/dd/ledger");
  if (!ledger || !claims.includes(ledger.name)) fail(nameOf(coordinator), "ledger is not on a PVC");
}
const trainer = workloads.find((w) => appOf(w) === "trainer");
if (!trainer) fail("trainer", "no trainer workload");
else {
  const svc = byKind("Service").find((s) => s.metadata.name === trainer.spec.serviceName);
  if (!svc || svc.spec.clusterIP !== "None") fail(nameOf(trainer), "not behind a headless Service");
}

// NetworkPolicies: which apps may reach each app's pods (ingress).
const policies = byKind("NetworkPolicy");
const selects = (selector, labels) =>
  Object.entries(selector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
  !(selector?.matchExpressions?.length);
const defaultDeny = policies.some((p) =>
  Object.keys(p.spec.podSelector ?? {}).length === 0 && (p.spec.policyTypes ?? []).includes("Ingress") &&
  !(p.spec.ingress?.length));
if (!defaultDeny) fail("NetworkPolicy", "no default deny of ingress");
const allowed = { coordinator: ["trainer"], dataset: ["trainer", "coordinator"], trainer: ["trainer", "coordinator"] };
for (const [app, expected] of Object.entries(allowed)) {
  const labels = { "app.kubernetes.io/name": app };
  const sources = new Set();
  for (const p of policies) {
    if (!selects(p.spec.podSelector, labels)) continue;
    for (const rule of p.spec.ingress ?? []) {
      if (!rule.from?.length) { fail(nameOf(p), `lets anyone reach ${app}`); continue; }
      // Prometheus, from a namespace labelled for monitoring, on the HTTP
      // port only (/metrics and the status page, behind the viewer token).
      const httpOnly = (rule.ports ?? []).length > 0 && rule.ports.every((port) => port.port === 8080);
      for (const peer of rule.from) {
        const prometheus = peer.namespaceSelector?.matchLabels?.["distributed-diffusion.io/monitoring"] === "true" &&
          peer.podSelector?.matchLabels?.["app.kubernetes.io/name"] === "prometheus";
        if (prometheus && httpOnly && !peer.ipBlock) continue;
        if (prometheus) { fail(nameOf(p), `lets Prometheus reach ${app} beyond its HTTP port`); continue; }
        if (peer.ipBlock || peer.namespaceSelector) { fail(nameOf(p), `lets outside ${app}'s namespace in`); continue; }
        const src = peer.podSelector?.matchLabels?.["app.kubernetes.io/name"];
        if (!src) fail(nameOf(p), `lets every pod reach ${app}`);
        else sources.add(src);
      }
    }
  }
  for (const s of sources) if (!expected.includes(s)) fail("NetworkPolicy", `${s} may reach ${app}`);
  if (!sources.has("trainer")) fail("NetworkPolicy", `trainers cannot reach ${app}`);
}

for (const f of findings) console.log(f);
console.log(`${overlay}: ${objects.length} objects, ${findings.length} findings`);
process.exit(findings.length ? 1 : 0);
