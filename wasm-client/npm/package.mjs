// Completes the npm package wasm-pack wrote to wasm-client/pkg: adds the Node
// entry point and writes the package.json a front-end developer expects
// (exports with types, sideEffects, files, …). Run by scripts/build-web.sh.
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";

const here = new URL("./", import.meta.url);
const pkg = new URL("../pkg/", import.meta.url);
const generated = JSON.parse(readFileSync(new URL("package.json", pkg), "utf8"));

for (const entry of ["index.js", "exechub_client_node.js"]) {
  copyFileSync(new URL(entry, here), new URL(entry, pkg));
}

// The generated types use DOM names (`Response`, `BufferSource` and
// `WebAssembly` in `init`'s argument) and `Symbol.dispose` (clients and
// subscriptions are disposable). Naming those libs here lets the types check
// under `tsc --strict` without `skipLibCheck` in any project: a Node project
// without the DOM lib, or one whose lib predates `Symbol.dispose`.
const types = new URL("exechub_client.d.ts", pkg);
const references = '/// <reference lib="dom" />\n/// <reference lib="esnext.disposable" />\n';
const declarations = readFileSync(types, "utf8");
if (!declarations.startsWith(references)) writeFileSync(types, references + declarations);

const manifest = {
  name: generated.name,
  version: generated.version,
  description: "Typed publish/subscribe client for the exechub event hub: browsers, web workers and Node",
  license: generated.license,
  repository: generated.repository,
  keywords: ["exechub", "events", "realtime", "websocket", "pubsub", "wasm", "webassembly", "typescript"],
  type: "module",
  // Node gets an `init()` that reads the .wasm from disk; everything else
  // (browsers, bundlers such as Vite, web workers, Deno) the web build,
  // through index.js (wasm-bindgen's glue with `free()` that closes).
  exports: {
    ".": {
      types: "./exechub_client.d.ts",
      node: "./exechub_client_node.js",
      default: "./index.js",
    },
    "./exechub_client_bg.wasm": "./exechub_client_bg.wasm",
    "./package.json": "./package.json",
  },
  main: "./index.js",
  module: "./index.js",
  types: "./exechub_client.d.ts",
  sideEffects: false,
  files: [
    "index.js",
    "exechub_client_bg.wasm",
    "exechub_client.js",
    "exechub_client_node.js",
    "exechub_client.d.ts",
    "exechub_client_bg.wasm.d.ts",
  ],
  engines: { node: ">=20" },
  // Node before 22 has no global WebSocket: pass the `ws` package's.
  peerDependencies: { ws: ">=8" },
  peerDependenciesMeta: { ws: { optional: true } },
};

writeFileSync(new URL("package.json", pkg), `${JSON.stringify(manifest, null, 2)}\n`);
