#!/usr/bin/env node
// Typeset TeX with KaTeX at build time, for tools/quarto: every formula of the whole site in one call.
// stdin:  JSON [[tex, display], ...]      (display: true for $$...$$ / \[...\], false for $...$ / \(...\))
// stdout: JSON [{html}, or {html, error}]  in the same order; a formula KaTeX rejects comes back as KaTeX's red
//         error markup (class katex-error) with the message, so one bad formula reports itself without stopping the build.
// KaTeX resolves from the repository's node_modules (package.json pins it; `make docs` runs `npm ci`).
"use strict";
const katex = require("katex");

const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", () => {
  const formulas = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const out = formulas.map(([tex, display]) => {
    // htmlAndMathml: the HTML is what the reader sees (KaTeX's fonts and CSS); the hidden MathML is for screen readers.
    const opts = { displayMode: !!display, output: "htmlAndMathml", strict: "ignore", throwOnError: true };
    try {
      return { html: katex.renderToString(tex, opts) };
    } catch (e) {
      return { html: katex.renderToString(tex, { ...opts, throwOnError: false }), error: String(e.message || e) };
    }
  });
  process.stdout.write(JSON.stringify(out));
});
