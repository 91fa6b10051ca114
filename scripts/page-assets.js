// The service page's static files (HTML, CSS, icon) go beside its compiled modules in
// dist/lib/serve/page (tsc compiles the TypeScript; it does not copy other files).
const fs = require('fs');
const path = require('path');

const source = path.join(__dirname, '..', 'lib', 'serve', 'page');
const target = path.join(__dirname, '..', 'dist', 'lib', 'serve', 'page');
fs.mkdirSync(target, { recursive: true });
for (const name of fs.readdirSync(source)) {
  if (/\.(html|css|svg)$/.test(name)) fs.copyFileSync(path.join(source, name), path.join(target, name));
}
