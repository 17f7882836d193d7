// Validates glTF/GLB files with the Khronos glTF Validator (npm gltf-validator).
// Usage: node tests/js/validate_gltf.mjs FILE...
// Prints one JSON object: {file: {errors, warnings, infos, messages: [first issues]}}.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const validator = require("gltf-validator");

const reports = {};
for (const file of process.argv.slice(2)) {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, { uri: file, maxIssues: 50 });
  reports[file] = {
    errors: report.issues.numErrors,
    warnings: report.issues.numWarnings,
    infos: report.issues.numInfos,
    messages: report.issues.messages.map((m) => `${["error", "warning", "info", "hint"][m.severity]} ${m.code} ${m.pointer ?? ""}: ${m.message}`),
  };
}
process.stdout.write(JSON.stringify(reports));
