#!/usr/bin/env -S node --max-semi-space-size=64 --min-semi-space-size=64
// The `4runr` command. A committed file rather than dist/cli/index.js itself, so that `npm ci`
// links it into node_modules/.bin before anything is built (npm skips bins whose file is missing,
// and `npx 4runr` would then look for a package of that name on the registry).
//
// The V8 flags size the young generation for a proxy: nearly everything a request allocates dies
// young, and with the default 16 MB semi-spaces a gateway at a few thousand requests/s scavenged
// every ~0.3 s, each pause delaying the requests that arrived during it (measured: ~6x fewer
// scavenges and a lower fixed-rate p99). `npm start` and the benchmark pass the same flags.
try {
  await import('../dist/cli/index.js')
} catch (err) {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.message).includes('dist/cli/index.js')) throw err
  process.stderr.write('4runr: not built yet; run `npm run build` (or `npm start`) in the repository first\n')
  process.exitCode = 1
}
