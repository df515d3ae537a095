// Runs the component's exported `run` on Node.js, transpiled by jco:
//   node run.mjs OUT_DIR REQUEST.json
// REQUEST.json holds { endpoints, options, inputs } with the WIT records'
// camelCase field names. Prints {"ok": outputs} or {"err": workflow-error}.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { _setEnv } from '@bytecodealliance/preview2-shim/cli';

const [dir, requestPath] = process.argv.slice(2);

// The shim hands the guest all of process.env by default: give it only the
// keys, which it sends itself (no host attaches them here).
_setEnv(
  Object.fromEntries(
    ['AMBERFLO_API_KEY', 'STRIPE_API_KEY']
      .filter((name) => process.env[name])
      .map((name) => [name, process.env[name]]),
  ),
);
const { workflow } = await import(pathToFileURL(`${dir}/usage-sync.js`));

const { endpoints, options, inputs } = JSON.parse(readFileSync(requestPath, 'utf8'));
options.retryBudgetMs = BigInt(options.retryBudgetMs);

// u64/s64 arrive as BigInt; an absent option as undefined.
const json = (value) =>
  JSON.stringify(value, (_key, x) =>
    typeof x === 'bigint' ? Number(x) : x === undefined ? null : x,
  );

try {
  console.log(json({ ok: workflow.run(endpoints, options, inputs) }));
} catch (e) {
  // An `err` result is thrown with the variant as `payload`; a trap has none.
  if (e && Object.hasOwn(e, 'payload')) {
    console.log(json({ err: e.payload }));
    process.exitCode = 2;
  } else {
    throw e;
  }
}
