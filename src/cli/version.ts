import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Command } from 'commander';

/** Creates the `version` command, which prints `walship <version>`. */
export function versionCommand(): Command {
  return new Command('version')
    .description('Print the version of walship.')
    .allowExcessArguments(false)
    .action(() => {
      process.stdout.write(`walship ${readVersion()}\n`);
    });
}

/**
 * Reads the version from walship's package.json. The file is searched upward
 * from this module because the compiled file sits at another depth
 * (dist/src/cli) than its source (src/cli).
 */
export function readVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));

  for (let depth = 0; depth < 6; depth++) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'walship' && typeof pkg.version === 'string') return pkg.version;
    }
    dir = path.dirname(dir);
  }
  return '(development build)';
}
