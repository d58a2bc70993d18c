// Validate an AsyncAPI document with the AsyncAPI project's own parser (@asyncapi/parser, with
// the Avro schema parser so the avro/*.avsc payloads are parsed and checked too).
//
//   node deploy/check/asyncapi_validate.cjs TOOLS_DIR docs/asyncapi.yaml
//
// TOOLS_DIR holds node_modules (deploy/tools/install.sh asyncapi). Prints every diagnostic;
// exits 1 when any is an error (severity 0), 2 on bad usage.
"use strict";
const path = require("node:path");
const { createRequire } = require("node:module");

async function main() {
  const [toolsDir, file] = process.argv.slice(2);
  if (!toolsDir || !file) {
    console.error("usage: asyncapi_validate.cjs TOOLS_DIR ASYNCAPI_FILE");
    return 2;
  }
  const load = createRequire(path.join(path.resolve(toolsDir), "package.json"));
  const { Parser, fromFile } = load("@asyncapi/parser");
  const { AvroSchemaParser } = load("@asyncapi/avro-schema-parser");
  const parser = new Parser();
  parser.registerSchemaParser(AvroSchemaParser());
  const { document, diagnostics } = await fromFile(parser, path.resolve(file)).parse();
  const names = ["error", "warning", "info", "hint"];
  let errors = 0;
  for (const d of diagnostics) {
    const where = (d.path || []).join("/");
    console.log(`${names[d.severity] || d.severity}: ${d.code}: ${d.message} at /${where}`);
    if (d.severity === 0) errors += 1;
  }
  if (errors || !document) return 1;
  const channels = document.channels().all().map((c) => c.address());
  const messages = document.allMessages().all().length;
  console.log(`valid AsyncAPI ${document.version()}: ${channels.length} channels (${channels.join(", ")}), ${messages} messages`);
  return 0;
}

main().then((code) => process.exit(code), (err) => {
  console.error(`asyncapi: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
