#!/usr/bin/env node
// Test helper, not a Synnefo tool: `seed-image.js '<json>'` puts another account's image into
// the fake cloud's state (FAKE_SYNNEFO_STATE) under the state lock and prints it as JSON.
import { seedImage } from './fake-synnefo.js';

process.stdout.write(`${JSON.stringify(seedImage(JSON.parse(process.argv[2] ?? '{}')))}\n`);
