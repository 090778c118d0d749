// The package's entry point in Node (the "node" condition of its exports).
//
// The browser build's default `init()` fetches the .wasm next to the module
// (`new URL(…, import.meta.url)`); Node's fetch cannot read `file:` URLs, so
// here `init()` without arguments reads the file from disk instead. Every
// other export is the browser entry's own (index.js): one .wasm, one glue.
import initWeb from "./index.js";

export * from "./index.js";

/**
 * Loads the WebAssembly module (once): from disk when called without
 * arguments, otherwise exactly as the browser build's `init`.
 */
export default async function init(input) {
  if (input === undefined) {
    const { readFile } = await import("node:fs/promises");
    const module_or_path = await readFile(new URL("./exechub_client_bg.wasm", import.meta.url));
    return initWeb({ module_or_path });
  }
  return initWeb(input);
}
