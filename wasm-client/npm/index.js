// The package's entry point for browsers, web workers and bundlers (and,
// through exechub_client_node.js, for Node): wasm-bindgen's glue, with one
// addition it cannot express.
//
// A client stays alive while it has live subscriptions or publishes in
// flight, even when nothing references it any more (see the crate docs), so
// the garbage collector never ends it early. `free()` and `Symbol.dispose`
// are the application's explicit end: they close the client first, whatever
// it still has, and then release it.
import init, { ExechubClient as GeneratedClient } from "./exechub_client.js";

export * from "./exechub_client.js";
export default init;

export class ExechubClient extends GeneratedClient {
  /** Closes the client (as `close()`), then releases its memory. */
  free() {
    this.close();
    super.free();
  }
}

// `using client = new ExechubClient(…)`: `free()` at the end of the scope.
if (Symbol.dispose) ExechubClient.prototype[Symbol.dispose] = ExechubClient.prototype.free;
