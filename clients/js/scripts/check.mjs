// `npm run check`: the types hold (tsc, strict), and dist/ (committed, and served by the server
// to the console and the rooms demo as it is) is exactly what src/ compiles to. Fails with the
// files that differ; `npm run build` brings dist/ up to date.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-client-check-'));
try {
  execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json'), '--outDir', out], { stdio: 'inherit' });
  const list = (dir) => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []);
  const built = list(out);
  const committed = list(path.join(root, 'dist'));
  const differ = [...new Set([...built, ...committed])].filter((name) => {
    const a = path.join(out, name);
    const b = path.join(root, 'dist', name);
    return !fs.existsSync(a) || !fs.existsSync(b) || !fs.readFileSync(a).equals(fs.readFileSync(b));
  });
  if (differ.length) {
    console.error(`dist/ is not what src/ compiles to (${differ.join(', ')}): run \`npm run build\` in clients/js and commit dist/`);
    process.exit(1);
  }
  console.log(`types check; dist/ matches src/ (${built.length} files)`);
} finally {
  fs.rmSync(out, { recursive: true, force: true });
}
